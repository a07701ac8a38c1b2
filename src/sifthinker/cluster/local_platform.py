"""A cluster's services on one machine, to run the pipeline the way a cluster runs it (`make cluster-local`).

* :data:`SECRET_MAP`: the cluster's secrets (``manifests/base/secrets/``) as a recipe's ``platform.secrets``
  maps them; a container run of a recipe without that section uses it (:func:`with_secret_map`).
* :class:`LocalPlatform`: brings up, with the Docker CLI a user has, the image registry (Debian's
  ``docker-registry``, unless one already answers on its port), PostgreSQL and the MLflow server from our
  images (containers on the host network, so 127.0.0.1 stands for the cluster's service addresses) and an
  S3 endpoint (moto's server, a process), and tears down what it started, in reverse order, whatever
  happened. :meth:`LocalPlatform.secrets` gives the secrets' contents as a cluster would hold them.
* :func:`serve_spec` / :meth:`LocalPlatform.serve`: the serve image started as the rendered
  InferenceService's predictor container (its image, command, arguments and environment, secret keys
  resolved from the secrets), on a read-only root with a /tmp, as the pod runs it.

Everything here is a real part (engine, registry, PostgreSQL, MLflow server, moto's S3 server); nothing
of the checkout is mounted into any container.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sifthinker.config.platform_config import SecretEnv
from sifthinker.config.run_config import RunConfig
from sifthinker.config.schema import ConfigError

__all__ = ["SECRET_MAP", "LocalPlatform", "PlatformError", "image_registry", "registry_digest", "serve_spec",
           "with_secret_map"]

# As manifests/base/secrets/sifthinker-{mlflow,s3}.yaml name them (the 7B recipes map the same keys).
SECRET_MAP: tuple[SecretEnv, ...] = (
    SecretEnv("sifthinker-mlflow", {"tracking-uri": "MLFLOW_TRACKING_URI"}),
    SecretEnv("sifthinker-s3", {"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
                                "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY", "endpoint-url": "AWS_ENDPOINT_URL_S3"}),
)
ARTIFACT_BUCKET = "sifthinker-artifacts"  # the MLflow server's artifact destination (proxied)
BENCHMARK_BUCKET = "sifthinker-benchmarks"  # benchmark data a recipe names as s3://
# moto accepts any key pair; these are what the local S3 secret holds.
S3_KEYS = {"AWS_ACCESS_KEY_ID": "local-access-key", "AWS_SECRET_ACCESS_KEY": "local-secret-key"}
DB = {"user": "mlflow", "password": "local-db-password", "name": "mlflow"}


class PlatformError(RuntimeError):
    """A service of the local platform did not come up (the message says which and why)."""


def with_secret_map(cfg: RunConfig) -> RunConfig:
    """``cfg`` with :data:`SECRET_MAP` as ``platform.secrets`` when it maps none (a local recipe)."""
    if cfg.platform.secrets:
        return cfg
    return dataclasses.replace(cfg, platform=dataclasses.replace(cfg.platform, secrets=list(SECRET_MAP)))


def image_registry(image: str) -> tuple[str, str]:
    """(registry host:port, IMAGE_REGISTRY of `make images`) of an image reference like
    ``127.0.0.1:5055/sifthinker/sifthinker:0.1.0``; ConfigError for one without a registry host."""
    repo = image.split("@")[0].rsplit(":", 1)[0] if "/" in image else ""
    host = repo.split("/")[0]
    if not repo or not ("." in host or ":" in host or host == "localhost"):
        raise ConfigError(f"recipe.platform.image: {image!r} names no registry host (e.g. 127.0.0.1:5055/...)")
    return host, repo.rsplit("/", 1)[0]


def serve_spec(manifest: Mapping[str, Any], secrets: Mapping[str, Mapping[str, str]], port: int) -> dict[str, Any]:
    """The predictor container of a rendered InferenceService as ``docker run`` needs it: image, command,
    environment (values, and secret keys looked up in ``secrets``; a missing required key fails as the
    kubelet does), arguments and the folders of its emptyDir volumes (``tmpfs``). One change: it listens on
    127.0.0.1:``port`` (host network, so it cannot take the pod's 8080 for granted)."""
    container = manifest["spec"]["predictor"]["containers"][0]
    env: dict[str, str] = {}
    for e in container.get("env") or []:
        if "value" in e:
            env[e["name"]] = str(e["value"])
            continue
        ref = e["valueFrom"]["secretKeyRef"]
        values = secrets.get(ref["name"], {})
        if ref["key"] in values:
            env[e["name"]] = values[ref["key"]]
        elif not ref.get("optional"):
            raise PlatformError(f"InferenceService: secret {ref['name']!r} has no key {ref['key']!r} "
                                f"({e['name']}): CreateContainerConfigError")
    args = list(container.get("args") or [])
    for flag, value in (("--host", "127.0.0.1"), ("--port", str(port))):
        if flag in args:
            args[args.index(flag) + 1] = value
    # The pod's emptyDir volumes (the model cache) are writable folders on its read-only root: a tmpfs each.
    volumes = {v["name"]: v for v in manifest["spec"]["predictor"].get("volumes") or []}
    tmpfs = []
    for m in container.get("volumeMounts") or []:
        if "emptyDir" not in volumes.get(m["name"], {}):
            raise PlatformError(f"InferenceService: volume {m['name']!r} at {m['mountPath']} is not an emptyDir; "
                                "only those are made here")
        tmpfs.append(m["mountPath"])
    return {"image": container["image"], "command": list(container.get("command") or []), "args": args, "env": env,
            "tmpfs": tmpfs}


def registry_digest(image: str) -> str:
    """The digest a registry (plain http on 127.0.0.1, as Docker allows) answers for ``image``'s tag."""
    host, _, rest = image.partition("/")
    repo, _, tag = rest.rpartition(":")
    accept = ", ".join(["application/vnd.docker.distribution.manifest.v2+json",
                        "application/vnd.docker.distribution.manifest.list.v2+json",
                        "application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json"])
    req = urllib.request.Request(f"http://{host}/v2/{repo}/manifests/{tag}", method="HEAD", headers={"Accept": accept})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.headers["Docker-Content-Digest"]
    except OSError as e:
        raise PlatformError(f"{image}: the registry {host} does not answer for it ({e})") from e


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _get(url: str, timeout: float = 3) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False


@dataclass
class LocalPlatform:
    """The services' names, ports and folders (defaults: docs/cluster.md, "The container path")."""

    image_registry: str  # e.g. 127.0.0.1:5055/sifthinker: where the mlflow and postgres images are
    image_tag: str
    state_dir: Path  # the registry's data (when started here), moto's log
    docker: str = field(default_factory=lambda: os.environ.get("DOCKER", "docker"))
    prefix: str = "sifthinker-local"  # container names
    postgres_port: int = 55432
    mlflow_port: int = 55000
    s3_port: int = 55555
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack, repr=False)

    @property
    def registry_port(self) -> int:
        host = self.image_registry.split("/")[0]
        return int(host.rsplit(":", 1)[1]) if ":" in host else 443

    @property
    def mlflow_uri(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def image(self, name: str) -> str:
        return f"{self.image_registry}/{name}:{self.image_tag}"

    def secrets(self) -> dict[str, dict[str, str]]:
        """The contents of :data:`SECRET_MAP`'s secrets for these services."""
        return {"sifthinker-mlflow": {"tracking-uri": self.mlflow_uri},
                "sifthinker-s3": {**S3_KEYS, "endpoint-url": self.s3_endpoint}}

    def s3_client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.s3_endpoint, region_name="us-east-1",
                            aws_access_key_id=S3_KEYS["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=S3_KEYS["AWS_SECRET_ACCESS_KEY"])

    # -- lifecycle -----------------------------------------------------------------------------------------
    def __enter__(self) -> LocalPlatform:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Tear down what was started here (containers removed, processes ended), last started first."""
        self._stack.close()

    def _run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        out = subprocess.run([self.docker, *args], capture_output=True, text=True, timeout=timeout)
        if check and out.returncode != 0:
            raise PlatformError(f"{self.docker} {' '.join(args[:3])} ...: {out.stderr.strip()[-800:]}")
        return out

    def _container(self, name: str, image: str, *args: str, env: Mapping[str, str] | None = None,
                   flags: tuple[str, ...] = ()) -> str:
        """Start a detached container on the host network; removed again on :meth:`stop`."""
        full = f"{self.prefix}-{name}"
        self._run("rm", "-f", full, check=False)  # a leftover of a run that was killed
        env_flags = [x for k, v in (env or {}).items() for x in ("-e", f"{k}={v}")]
        self._run("run", "-d", "--name", full, "--network", "host", *flags, *env_flags, image, *args)
        self._stack.callback(self._run, "rm", "-f", full, check=False)
        return full

    def _wait(self, what: str, ready: Callable[[], bool], container: str | None = None, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if container and self._run("inspect", "-f", "{{.State.Running}}", container, check=False).stdout.strip() \
                    != "true":
                logs = self._run("logs", container, check=False)
                raise PlatformError(f"{what} exited: {(logs.stdout + logs.stderr).strip()[-1500:]}")
            if time.monotonic() > deadline:
                raise PlatformError(f"{what} not ready after {timeout:.0f}s")
            time.sleep(1)

    def start_registry(self) -> str:
        """The image registry on 127.0.0.1:PORT: one already answering is used (and left running), else
        Debian's ``docker-registry`` is started with its data under ``state_dir/registry``."""
        port = self.registry_port
        if _get(f"http://127.0.0.1:{port}/v2/"):
            return f"registry 127.0.0.1:{port} (already running)"
        exe = shutil.which("docker-registry")
        if not exe:
            raise PlatformError(f"no registry answers on 127.0.0.1:{port} and there is no docker-registry binary "
                                "(apt-get install docker-registry)")
        conf = self.state_dir / "registry.yml"
        conf.write_text(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {self.state_dir / 'registry'}\n"
                        f"http:\n  addr: 127.0.0.1:{port}\n")
        self._process("registry", [exe, "serve", str(conf)])
        self._wait("the registry", lambda: _get(f"http://127.0.0.1:{port}/v2/"), timeout=30)
        return f"registry 127.0.0.1:{port} (started, data in {self.state_dir / 'registry'})"

    def _process(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.state_dir / f"{name}.log", "ab")  # noqa: SIM115 (closed on stop)
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

        def end() -> None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()

        self._stack.callback(end)
        return proc

    def start_services(self) -> str:
        """PostgreSQL and the MLflow server (its artifacts proxied to S3) from our images, and moto's S3."""
        for port in (self.postgres_port, self.mlflow_port, self.s3_port):
            if _port_open(port):
                raise PlatformError(f"port {port} on 127.0.0.1 is taken (a service of an earlier run?)")
        moto = Path(sys.executable).with_name("moto_server")
        if not moto.exists():
            raise PlatformError(f"no {moto} (the dev extra installs moto[server])")
        self._process("s3", [str(moto), "-H", "127.0.0.1", "-p", str(self.s3_port)])
        pg = self._container("postgres", self.image("sifthinker-postgres"), "postgres", "-p", str(self.postgres_port),
                             env={"POSTGRES_USER": DB["user"], "POSTGRES_PASSWORD": DB["password"],
                                  "POSTGRES_DB": DB["name"]})
        self._wait("moto's S3 server", lambda: _port_open(self.s3_port), timeout=60)
        s3 = self.s3_client()
        for bucket in (ARTIFACT_BUCKET, BENCHMARK_BUCKET):
            s3.create_bucket(Bucket=bucket)
        psql = ("exec", "-e", f"PGPASSWORD={DB['password']}", pg, "psql", "-h", "127.0.0.1", "-p", str(self.postgres_port),
                "-U", DB["user"], "-d", DB["name"], "-c", "select 1")  # over TCP with the password, as MLflow connects
        self._wait("PostgreSQL", lambda: self._run(*psql, check=False).returncode == 0, container=pg)
        store = f"postgresql://{DB['user']}:{DB['password']}@127.0.0.1:{self.postgres_port}/{DB['name']}"
        mlflow = self._container(
            "mlflow", self.image("sifthinker-mlflow"), "mlflow", "server", "--backend-store-uri", store,
            "--artifacts-destination", f"s3://{ARTIFACT_BUCKET}", "--host", "127.0.0.1", "--port", str(self.mlflow_port),
            env={**S3_KEYS, "AWS_DEFAULT_REGION": "us-east-1", "MLFLOW_S3_ENDPOINT_URL": self.s3_endpoint})
        self._wait("the MLflow server", lambda: _get(f"{self.mlflow_uri}/health"), container=mlflow)
        return (f"PostgreSQL :{self.postgres_port}, MLflow server {self.mlflow_uri} "
                f"(artifacts s3://{ARTIFACT_BUCKET}), S3 {self.s3_endpoint}")

    def pull(self, image: str) -> str:
        """Pull ``image`` from its registry (as a node does) and check that the image the engine now holds
        is the one the registry serves for the tag: its RepoDigest is the registry's manifest digest."""
        self._run("pull", "-q", image, timeout=1800)
        digest = registry_digest(image)
        held = self._run("image", "inspect", "-f", "{{json .RepoDigests}}", image).stdout
        repo = image.split("@")[0].rsplit(":", 1)[0]
        if f"{repo}@{digest}" not in held:
            raise PlatformError(f"{image}: the registry serves {digest}, the engine holds {held.strip()}")
        return digest

    def upload(self, folder: Path, uri: str) -> int:
        """Put a folder's files under ``s3://bucket/prefix`` (data a site keeps in its object store)."""
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        s3, n = self.s3_client(), 0
        for f in sorted(p for p in folder.rglob("*") if p.is_file()):
            s3.upload_file(str(f), bucket, f"{prefix.rstrip('/')}/{f.relative_to(folder).as_posix()}")
            n += 1
        return n

    @contextlib.contextmanager
    def serve(self, manifest: Mapping[str, Any], port: int, timeout: float = 600) -> Iterator[tuple[str, float]]:
        """The predictor container of ``manifest`` (:func:`serve_spec`) until the block ends; yields its base
        URL and the seconds from start to ready (``/v2/health/ready``)."""
        spec = serve_spec(manifest, self.secrets(), port)
        t0 = time.monotonic()
        with contextlib.ExitStack() as own:
            name = self._container("serve", spec["image"], *spec["command"][1:], *spec["args"], env=spec["env"],
                                   flags=("--read-only", "--tmpfs", "/tmp",
                                          *[x for d in spec["tmpfs"] for x in ("--tmpfs", f"{d}:uid=1000,gid=0")],
                                          "--entrypoint", spec["command"][0]))
            own.callback(self._run, "rm", "-f", name, check=False)
            base = f"http://127.0.0.1:{port}"
            self._wait("the serve container", lambda: _get(f"{base}/v2/health/ready"), container=name, timeout=timeout)
            yield base, time.monotonic() - t0
