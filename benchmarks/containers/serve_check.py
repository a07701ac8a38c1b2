"""Hand-run step of the container journey (docs/benchmarks.md, "Containers"), not yet `make cluster-local`.

After the container run: promote the challenger, start the serve-cpu image as a container (as the
InferenceService would: model URI, port, env), time cold start to ready, ask with the openai client."""
import json
import os
import subprocess
import sys
import time
import urllib.request

os.environ.update(MLFLOW_TRACKING_URI="http://127.0.0.1:55000")
from mlflow import MlflowClient
from PIL import Image

from sifthinker.cli.demo import DEMO_SCENE_SEED, ask
from sifthinker.config.run_config import RunConfig
from sifthinker.method.depth import colorize
from sifthinker.registry import model_versions
from sifthinker.scenes import generate_items

D = "/usr/bin/docker"
cfg = RunConfig.load(sys.argv[2] if len(sys.argv) > 2 else "benchmarks/containers/local-smoke.yaml")
name = cfg.registry.model_name
c = MlflowClient()
versions = c.search_model_versions(f"name='{name}'")
print("versions", [(v.version, v.aliases if hasattr(v, "aliases") else None) for v in versions])
latest = max(versions, key=lambda v: int(v.version))
model_versions.promote(cfg, name, latest.version, alias=model_versions.CHAMPION)
mv = c.get_model_version_by_alias(name, "champion")
print("champion", mv.version, mv.source)
runs = c.search_runs([c.get_experiment_by_name(cfg.registry.experiment).experiment_id])
print("runs", len(runs), sorted({r.data.tags.get("sifthinker.stage", r.info.run_name) for r in runs}))
subprocess.run([D, "rm", "-f", "i19-serve"], capture_output=True)
img = sys.argv[1]
t0 = time.monotonic()
subprocess.run([D, "run", "-d", "--name", "i19-serve", "--network", "host", "--read-only", "--tmpfs", "/tmp",
                "-e", "MLFLOW_TRACKING_URI=http://127.0.0.1:55000", "-e", "AWS_ACCESS_KEY_ID=testing",
                "-e", "AWS_SECRET_ACCESS_KEY=testing", "-e", "MLFLOW_S3_ENDPOINT_URL=http://127.0.0.1:55555",
                img, "sifthinker", "serve", "--model", f"models:/{name}@champion", "--host", "127.0.0.1",
                "--port", "58080", "--name", name], check=True)
base = "http://127.0.0.1:58080"
for _ in range(600):
    try:
        urllib.request.urlopen(f"{base}/v2/health/ready", timeout=2)
        break
    except Exception:
        st = subprocess.run([D, "inspect", "-f", "{{.State.Status}}", "i19-serve"], capture_output=True, text=True).stdout.strip()
        if st != "running":
            print(subprocess.run([D, "logs", "i19-serve"], capture_output=True, text=True).stderr[-3000:])
            sys.exit(1)
        time.sleep(1)
print(f"cold start to ready {time.monotonic() - t0:.1f}s")
scene, q = next(generate_items(1, DEMO_SCENE_SEED, width=cfg.data.width, height=cfg.data.height))
reply = ask(base, name, Image.fromarray(scene.rgb), colorize(scene.depth), q.question, cfg.serving.max_new_tokens)
print("sif", json.dumps(reply["sif"])[:400])
print("text", (reply["text"] or "")[:300])
