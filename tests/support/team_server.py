"""A team's tracking server for tests, for real: a PostgreSQL cluster (Debian's `postgresql`, installed by
scripts/setup-test.sh) on 127.0.0.1 at a free port in its own directory, and `mlflow server --app-name basic-auth`
on it (tracking store and user store both in PostgreSQL, `default_permission = NO_PERMISSIONS`, an admin with a
generated password), as mlflow/README.md tells a team to run it.

PostgreSQL refuses to run as root: under root (CI) the cluster runs as Debian's `postgres` user (`runuser`), and
its directory is owned by it. Passwords reach the servers only through the environment (PGPASSWORD,
MLFLOW_AUTH_ADMIN_PASSWORD), never a command line or a URI."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.serving.vllm_server import free_port
from tests.support.mlflow_server import NO_JOB_RUNNER, stop_server, wait_healthy

VENV_BIN = Path(sys.executable).parent
PG_ROOT = Path("/usr/lib/postgresql")  # where Debian's postgresql-NN packages put their binaries
PG_USER = "postgres"  # Debian's postgresql package creates it
ADMIN = "admin"


@dataclass(frozen=True)
class Credential:
    username: str
    password: str

    def env(self) -> dict[str, str]:
        """How a credential reaches MLflow clients and the modelgate CLI: the environment, never a URI."""
        return {"MLFLOW_TRACKING_USERNAME": self.username, "MLFLOW_TRACKING_PASSWORD": self.password}


def pg_bin() -> Path:
    """The newest installed PostgreSQL server's bin directory (Debian: /usr/lib/postgresql/<major>/bin)."""
    found = sorted((p.parent for p in PG_ROOT.glob("*/bin/postgres")), key=lambda p: int(p.parent.name))
    if not found:
        pytest.fail(f"no PostgreSQL server under {PG_ROOT}/*/bin: run scripts/setup-test.sh (installs Debian's "
                    "postgresql)")
    return found[-1]


def _log_tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError as exc:
        return f"(no log: {exc.strerror})"


class PostgresCluster:
    """A throwaway cluster: initdb, `pg_ctl start` on 127.0.0.1:<free port> (scram passwords, no unix socket
    outside its directory), a `mlflow` login role owning the databases asked for; `stop()` removes it all."""

    def __init__(self, databases: tuple[str, ...] = ("mlflow", "mlflow_auth")):
        self.bin = pg_bin()
        self.as_root = os.geteuid() == 0
        # Not under pytest's tmp dir: that is private to root, and the cluster's user must reach its directory.
        self.root = Path(tempfile.mkdtemp(prefix="modelgate-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = free_port()
        self.superuser_password = secrets.token_urlsafe(24)
        self.user = Credential("mlflow", secrets.token_urlsafe(24))
        self.databases = databases
        self.started = False

    def _run(self, *argv: str, env: dict[str, str] | None = None, timeout: float = 120) -> None:
        cmd = [*(["runuser", "-u", PG_USER, "--"] if self.as_root else []), *argv]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.root,
                              env={**os.environ, "LC_ALL": "C.UTF-8", **(env or {})})
        if proc.returncode != 0:
            raise RuntimeError(f"{Path(argv[0]).name} failed ({proc.returncode}): {proc.stderr[-2000:]}\n"
                               f"{_log_tail(self.log)}")

    def start(self) -> None:
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.superuser_password + "\n")
        pwfile.chmod(0o600)
        if self.as_root:
            shutil.chown(self.root, PG_USER, PG_USER)
            shutil.chown(pwfile, PG_USER, PG_USER)
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--pwfile", str(pwfile),
                  "--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync")
        pwfile.unlink()
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.root} "
                   "-c fsync=off -c full_page_writes=off -c max_connections=200")
        self.started = True  # from here on, stop() has something to stop
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                  "-o", options, "start")
        import psycopg
        from psycopg import sql

        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", password=self.superuser_password,
                             dbname="postgres", connect_timeout=10, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE ROLE mlflow LOGIN PASSWORD {}").format(sql.Literal(self.user.password)))
            for db in self.databases:
                conn.execute(sql.SQL("CREATE DATABASE {} OWNER mlflow").format(sql.Identifier(db)))

    def uri(self, database: str) -> str:
        """A SQLAlchemy URI without the password (libpq takes it from PGPASSWORD)."""
        return f"postgresql://{self.user.username}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        if self.started:
            self.started = False
            try:
                self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")
            except (RuntimeError, subprocess.TimeoutExpired):
                self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


class AuthMlflowServer:
    """`mlflow server --app-name basic-auth` on 127.0.0.1, tracking and user store in `cluster`, artifacts
    proxied to a directory; the admin user's password is generated and passed only in the environment."""

    def __init__(self, root: Path, cluster: PostgresCluster):
        self.root = root
        self.cluster = cluster
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.admin = Credential(ADMIN, secrets.token_urlsafe(24))
        self.log = root / "server.log"
        self.proc: subprocess.Popen | None = None

    def start(self, deadline_s: float = 180) -> None:
        config = self.root / "basic_auth.ini"
        config.write_text("[mlflow]\n"
                          "default_permission = NO_PERMISSIONS\n"
                          f"database_uri = {self.cluster.uri('mlflow_auth')}\n"
                          f"admin_username = {ADMIN}\n"
                          "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                          "auth_cache_ttl_seconds = 300\n")
        env = {**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(config), "PGPASSWORD": self.cluster.user.password,
               "MLFLOW_AUTH_ADMIN_PASSWORD": self.admin.password,
               "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16), **NO_JOB_RUNNER}
        for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_URI"):
            env.pop(key, None)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(VENV_BIN / "mlflow"), "server", "--app-name", "basic-auth", "--host", "127.0.0.1",
                 "--port", str(self.port), "--workers", "1",
                 "--backend-store-uri", self.cluster.uri("mlflow"),
                 "--artifacts-destination", str(self.root / "artifacts")],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        wait_healthy(self.proc, self.uri, self.log, "mlflow server (basic-auth, PostgreSQL)", deadline_s)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            stop_server(proc)


class TeamServer:
    """Both servers, started together and always torn down together."""

    def __init__(self, root: Path):
        self.cluster = PostgresCluster()
        self.mlflow = AuthMlflowServer(root, self.cluster)
        self.uri = self.mlflow.uri
        self.admin = self.mlflow.admin

    def start(self) -> TeamServer:
        try:
            self.cluster.start()
            self.mlflow.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        try:
            self.mlflow.stop()
        finally:
            self.cluster.stop()


def setup_users(server: TeamServer, config: Path, *, check: bool = True) -> dict:
    """Run mlflow/setup_users.py as a command, as the admin, for `config` (credentials only in its environment),
    with fresh passwords for the users it creates: {"pr", "release": Credential, "config", "output",
    "returncode"}."""
    from tests.support.cli import child_env
    from tests.support.paths import REPO

    pr, release = new_users()
    env = child_env({**server.admin.env(), "MLFLOW_TRACKING_URI": None, **password_env(pr, release)})
    proc = subprocess.run([sys.executable, str(REPO / "mlflow" / "setup_users.py"), "--tracking-uri", server.uri,
                           "--config", str(config)],
                          capture_output=True, text=True, env=env, timeout=300)
    if check and proc.returncode != 0:
        pytest.fail(f"mlflow/setup_users.py failed ({proc.returncode}): {proc.stdout}\n{proc.stderr}")
    return {"pr": pr, "release": release, "config": config, "output": proc.stdout + proc.stderr,
            "returncode": proc.returncode}


def new_users() -> tuple[Credential, Credential]:
    return Credential("modelgate-pr", secrets.token_urlsafe(18)), Credential("modelgate-release",
                                                                             secrets.token_urlsafe(18))


def password_env(pr: Credential, release: Credential) -> dict[str, str]:
    return {"MODELGATE_PR_PASSWORD": pr.password, "MODELGATE_RELEASE_PASSWORD": release.password}


_SCRIPT: list = []


def setup_team(server: TeamServer, config: Path, users: tuple[Credential, Credential] | None = None) -> str:
    """mlflow/setup_users.py's main in this process (no second MLflow import), as the admin, for a team's
    release.yaml: its experiments, registered model and the two users' permissions on them (the users created
    with `users`' passwords if missing). Its output."""
    import contextlib
    import importlib.util
    import io

    from tests.support.paths import REPO

    if not _SCRIPT:
        spec = importlib.util.spec_from_file_location("modelgate_setup_users", REPO / "mlflow" / "setup_users.py")
        assert spec is not None and spec.loader is not None
        script = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = script  # its dataclasses look their module up
        spec.loader.exec_module(script)
        _SCRIPT.append(script)
    saved, out = dict(os.environ), io.StringIO()
    os.environ.update({**server.admin.env(), **(password_env(*users) if users else {})})
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            code = _SCRIPT[0].main(["--tracking-uri", server.uri, "--config", str(config)])
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert code == 0, out.getvalue()
    return out.getvalue()
