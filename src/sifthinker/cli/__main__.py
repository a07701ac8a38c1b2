from sifthinker.cli import main

main()
