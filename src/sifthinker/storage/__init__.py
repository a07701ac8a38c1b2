"""Where data lives: local folders and ``s3://`` prefixes read into a cache (``locations``), folders
written to S3 with retries (``remote``), the one S3 endpoint and its credentials (``s3_endpoint``), and a
full disk as one clear error (``disk_space``).

May import ``sifthinker.names`` only.
"""
