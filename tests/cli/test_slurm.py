"""`farm slurm script` and docker/farm.def: the script's contents, and the script run on a real one-node Slurm.

The Slurm test starts its own cluster (Debian's slurm-wlm and munge, from `make setup`): munged on a private
socket with a fresh key, slurmctld and slurmd in the foreground with a generated slurm.conf (one node, this
machine's CPUs, root as SlurmUser and SlurmdUser, no cgroups), all in a temporary folder on free ports, and
submits the script with sbatch against the test's PostgreSQL and Redis: a clip is rendered and the job ends on
`scancel --signal=TERM`; another job's worker is stopped by `#SBATCH --signal` before its time limit. Every daemon and job process is
stopped at the end, also when the test fails.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from conftest import service_missing
from farm_cluster import wait_for, write_short_motions
from seaweed import free_ports
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[2]
SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


# --- the script's text ------------------------------------------------------------------------------------------


def central(farm_env, **more: str) -> None:  # type: ignore[no-untyped-def]
    farm_env(
        database_url="postgresql+psycopg://farm@db.cluster/farm",
        broker_url="redis://redis.cluster:6379/0",
        **more,
    )


def test_the_script_asks_for_one_task_per_gpu_and_runs_the_image(farm, farm_env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    central(farm_env, seed="7", device="optix")
    out = tmp_path / "workers.sbatch"
    result = farm(
        "slurm", "script", "--nodes", "3", "--gpus-per-node", "4", "--time", "1-00:00:00", "--partition", "gpu",
        "--account", "vision", "--image", "farm.sif", "--stop-before", "600", "--sbatch=--mem=64G", "--out", str(out),
    )  # fmt: skip
    assert result.code == 0, result.err
    script = out.read_text()
    for line in (
        "#SBATCH --nodes=3",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --gres=gpu:4",
        "#SBATCH --time=1-00:00:00",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=vision",
        "#SBATCH --signal=TERM@600",
        "#SBATCH --mem=64G",
        "export FARM_SEED=7",
        "export FARM_BROKER_URL=redis://redis.cluster:6379/0",
    ):
        assert line in script.splitlines(), line
    assert (
        f"exec apptainer exec --nv {tmp_path / 'farm.sif'} farm worker --device optix --concurrency 1"
        in script
    )
    assert 'export CUDA_VISIBLE_DEVICES="${gpus[$SLURM_LOCALID]}"' in script
    assert "srun --export=ALL" in script and "FARM_DEVICE" not in script
    subprocess.run(["bash", "-n", str(out)], check=True)


def test_cpu_mode_asks_for_no_gpu_and_runs_this_environments_farm(farm, farm_env) -> None:  # type: ignore[no-untyped-def]
    central(farm_env)
    result = farm("slurm", "script", "--gpus-per-node", "2", "--device", "cpu", "--cpus-per-worker", "8")
    assert result.code == 0, result.err
    assert "--gres" not in result.out and 'CUDA_VISIBLE_DEVICES="' not in result.out
    assert "#SBATCH --cpus-per-task=8" in result.out and "--cpus-per-task=8 \\" in result.out
    farm_bin = Path(sys.executable).parent / "farm"
    assert f"exec {farm_bin} worker --device cpu --concurrency 1" in result.out


def test_secrets_stay_out_of_the_script_and_come_from_the_env_file(farm, farm_env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    central(farm_env, dashboard_auth="admin:hunter2")
    farm_env(broker_url="redis://:s3cret@redis.cluster:6379/0")
    refused = farm("slurm", "script")
    assert refused.code != 0 and "FARM_BROKER_URL" in refused.err and "FARM_DASHBOARD_AUTH" in refused.err
    env_file = tmp_path / "secrets.env"
    env_file.write_text("FARM_BROKER_URL='redis://:s3cret@redis.cluster:6379/0'\n")
    env_file.chmod(0o600)
    partial = farm("slurm", "script", "--env-file", str(env_file))
    assert partial.code != 0 and "FARM_DASHBOARD_AUTH" in partial.err and "FARM_BROKER_URL" not in partial.err
    env_file.write_text(env_file.read_text() + "FARM_DASHBOARD_AUTH=admin:hunter2\n")
    result = farm("slurm", "script", "--env-file", str(env_file))
    assert result.code == 0, result.err
    assert "s3cret" not in result.out and "hunter2" not in result.out
    assert f"FARM_ENV_FILE={env_file}" in result.out and "export FARM_DATABASE_URL=" in result.out


CENTRAL = {"database_url": "postgresql+psycopg://farm@db/farm", "broker_url": "redis://r/0"}


@pytest.mark.parametrize(
    ("settings", "args", "complaint"),
    [
        ({}, (), "FARM_DATABASE_URL"),  # the embedded SQLite defaults serve no cluster
        ({**CENTRAL, "database_url": "sqlite:////shared/farm.db"}, (), "FARM_DATABASE_URL"),
        ({**CENTRAL, "broker_url": "sqla+sqlite:///b.db"}, (), "FARM_BROKER_URL"),
        (CENTRAL, ("--time", "90"), "--time"),
        (CENTRAL, ("--time", "00:05:00", "--stop-before", "300"), "--stop-before"),
        (CENTRAL, ("--partition", "gpu\n#SBATCH --x"), "--partition"),
        (CENTRAL, ("--device", "metal"), "--device"),
    ],
)
def test_bad_requests_are_refused(farm, farm_env, settings, args, complaint) -> None:  # type: ignore[no-untyped-def]
    farm_env(**settings)
    result = farm("slurm", "script", *args)
    assert result.code != 0 and complaint in result.err, result.err


# --- the env file and every value the script holds, through bash ------------------------------------------------


def stubs(folder: Path, seen: Path) -> dict[str, str]:
    """`apptainer` and `srun` on PATH for running a script as sbatch would: `apptainer exec IMAGE farm slurm env`
    runs this environment's farm, `... farm worker` writes its environment to `seen` as JSON, and `srun` starts
    one task of its `bash -c` command."""
    folder.mkdir()
    farm_bin = Path(sys.executable).parent / "farm"
    (folder / "apptainer").write_text(
        "#!/bin/bash\n"
        'shift; [ "$1" = --nv ] && shift; shift 2\n'  # exec [--nv] IMAGE farm
        f'if [ "$1" = slurm ]; then exec {shlex.quote(str(farm_bin))} "$@"; fi\n'
        f"exec {shlex.quote(sys.executable)} -c 'import json, os, sys; "
        f'json.dump(dict(os.environ), open(sys.argv[1], "w"))\' {shlex.quote(str(seen))}\n'
    )
    (folder / "srun").write_text(
        '#!/bin/bash\nwhile [ "$1" != bash ]; do shift; done\n'
        'export SLURM_PROCID=0 SLURM_LOCALID=0 SLURMD_NODENAME=node1\nexec "$@"\n'
    )
    for stub in folder.iterdir():
        stub.chmod(0o755)
    return {"PATH": f"{folder}:/usr/bin:/bin", "HOME": "/nonexistent", "LANG": "C.UTF-8"}


def test_env_file_values_reach_the_workers_as_python_dotenv_reads_them(farm, farm_env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from dotenv import dotenv_values

    marker = tmp_path / "ran"
    touch = f"touch {marker}"
    central(farm_env, note=f"$({touch}) `{touch}`; {touch} 'q' \"d\"\nsecond line")
    env_file = tmp_path / "my secrets $HOME `x`.env"  # its path is quoted too
    env_file.write_text(
        f"FARM_DATABASE_URL='postgresql+psycopg://farm:p$ss`{touch}`@db/farm'\n"
        f'FARM_BROKER_URL="redis://:a b;{touch};c@redis/0"\n'
        "FARM_DASHBOARD_AUTH=admin:p$ss\n"
        f"UNQUOTED=a b;{touch}\n"
        f"BACKTICK=`{touch}`\n"
        f"SUBST=$({touch})\n"
        "BRACES=${HOME}x\n"
        "SPACES='  a b  '\n"
        'QUOTES="it\'s \\"quoted\\""\n'
        "SINGLE='say \"hi\" $HOME'\n"
        'ESCAPED_NEWLINE="line one\\nline two"\n'
        "RAW_NEWLINE='first\nsecond\n'\n"
        "export EXPORTED=yes # a comment\n"
        "BACKSLASH=a\\b\n"
        "UNICODE=pässwörd\n"
        "EMPTY=\n"
    )
    env_file.chmod(0o600)
    expected = dotenv_values(env_file, interpolate=False)
    assert expected["FARM_DASHBOARD_AUTH"] == "admin:p$ss" and expected["UNQUOTED"] == f"a b;{touch}"
    assert expected["SUBST"] == f"$({touch})" and expected["RAW_NEWLINE"] == "first\nsecond\n"
    assert expected["ESCAPED_NEWLINE"] == "line one\nline two" and expected["QUOTES"] == 'it\'s "quoted"'
    image = tmp_path / "my $image `x`.sif"
    script = tmp_path / "workers.sbatch"
    result = farm(
        "slurm", "script", "--device", "cpu", "--image", str(image), "--env-file", str(env_file),
        "--out", str(script),
    )  # fmt: skip
    assert result.code == 0, result.err
    assert "p$ss" not in script.read_text()
    seen = tmp_path / "seen.json"
    run = subprocess.run(
        ["bash", str(script)], env=stubs(tmp_path / "bin", seen), cwd=tmp_path, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    environ = json.loads(seen.read_text())
    for name, value in expected.items():
        assert environ[name] == value, name
    assert environ["FARM_NOTE"] == os.environ["FARM_NOTE"]
    assert not marker.exists()


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        (b"OK=1\nBAD-NAME=1\n", "line 2 of"),
        (b"'A B'=1\n", "line 1 of"),
        (b"OK=1\n'A\nB'=1\n", "line 2 of"),
        (b"1X=1\n", "line 1 of"),
        (b'A="never closed\n', "line 1 of"),
        (b"A=x\0y\n", "NUL"),
        (b"A=\xff\n", "UTF-8"),
    ],
)
def test_env_file_lines_bash_cannot_export_are_refused(
    farm, farm_env, tmp_path, monkeypatch, text, complaint
) -> None:  # type: ignore[no-untyped-def]
    central(farm_env)
    env_file = tmp_path / "secrets.env"
    env_file.write_bytes(text)
    env_file.chmod(0o600)
    out = tmp_path / "workers.sbatch"
    out.write_text("the script of before\n")
    result = farm("slurm", "script", "--env-file", str(env_file), "--out", str(out))
    assert result.code == 3 and complaint in result.err and str(env_file) in result.err, result.err
    assert len(result.err.strip().splitlines()) == 1, result.err
    assert out.read_text() == "the script of before\n" and sorted(tmp_path.iterdir()) == sorted(
        [out, env_file]
    )
    # The job's loader refuses the same file the same way.
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text)))
    loaded = farm("slurm", "env")
    assert loaded.code == 3 and complaint in loaded.err and loaded.out == "", loaded.err


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--image", "x.sif\nFARM_WORKER\n{touch}\n"),
        ("--image", "x.sif\n"),
        ("--partition", "gpu\n"),
        ("--account", "vision\n{touch}"),
        ("--job-name", "workers\n"),
        ("--output", "job-%j.out\n{touch}"),
        ("--time", "24:00:00\n"),
        ("--sbatch", "--mem=1G\n{touch}"),
        ("--env-file", "secrets.env\n{touch}"),
        ("--out", "workers\n{touch}.sbatch"),
    ],
)
def test_a_newline_in_an_option_is_refused_before_anything_is_written(
    farm, farm_env, tmp_path, option, value
) -> None:  # type: ignore[no-untyped-def]
    central(farm_env)
    marker = tmp_path / "ran"
    result = farm("slurm", "script", "--device", "cpu", option, value.format(touch=f"touch {marker}"))
    assert result.code == 2 and option in result.err and result.out == "", result.err
    assert len(result.err.strip().splitlines()) == 1, result.err
    assert not marker.exists() and list(tmp_path.iterdir()) == []


def test_a_farm_variable_whose_name_bash_cannot_export_is_refused(
    farm, farm_env, tmp_path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    central(farm_env)
    monkeypatch.setenv(f"FARM_X;touch {tmp_path / 'ran'};Y", "1")
    result = farm("slurm", "script")
    assert result.code == 3 and "FARM_X;touch" in result.err and result.out == "", result.err


def test_the_script_is_written_whole_or_not_at_all(farm, farm_env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    central(farm_env)
    result = farm("slurm", "script", "--out", str(tmp_path / "missing" / "workers.sbatch"))
    assert result.code == 3 and "cannot write --out" in result.err, result.err
    assert list(tmp_path.iterdir()) == []


# --- docker/farm.def ----------------------------------------------------------------------------------------------


def def_sections(path: Path) -> tuple[dict[str, str], dict[str, list[str]]]:
    """An Apptainer definition file: its header (keyword: value) and its %sections' lines."""
    header: dict[str, str] = {}
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("%"):
            current = sections.setdefault(line[1:].split()[0], [])
        elif current is not None:
            if line and not line.startswith("#"):
                current.append(line)
        elif line and not line.startswith("#"):
            key, _, value = line.partition(":")
            header[key.strip()] = value.strip()
    return header, sections


def test_the_apptainer_image_is_built_by_the_docker_images_install_script() -> None:
    header, sections = def_sections(ROOT / "docker" / "farm.def")
    assert header["Bootstrap"] == "docker" and header["From"].startswith("python:3.11")
    copied = {line.split()[0]: line.split()[1] for line in sections["files"]}
    # Everything the worker image copies into /opt/farm, from the same paths.
    dockerfile = (ROOT / "docker" / "worker.Dockerfile").read_text()
    for source in re.findall(r"^COPY (?!--from)(.+?) \S+$", dockerfile, re.M):
        for item in source.split():
            if item != "docker/entrypoint.sh":
                assert item in copied, item
                assert (ROOT / item).exists()
    assert copied["docker/install.sh"].startswith("/opt/farm/")
    post = "\n".join(sections["post"])
    assert re.search(r"install\.sh deps worker\.lock\b", post) and re.search(r"install\.sh farm\b", post)
    assert post.index("python3.11 -m venv /opt/venv") < post.index("install.sh deps")
    assert sections["runscript"] == ['exec farm "$@"']
    assert any("/opt/venv/bin" in line for line in sections["environment"])


# --- a real one-node Slurm ----------------------------------------------------------------------------------------


def sbin(name: str) -> str:
    found = shutil.which(name, path=os.environ.get("PATH", "") + ":" + SBIN_PATH)
    if found is None:
        raise RuntimeError(
            f"{name} is not installed (Debian's slurm-wlm and munge; `make setup` installs them)"
        )
    return found


class OneNodeSlurm:
    """munged, slurmctld and slurmd of the test's own, in the foreground, in a temporary folder."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="farm-slurm-"))  # short: munged's socket path has a limit
        self.cluster = f"farmtest{uuid.uuid4().hex[:8]}"  # marks the jobs' processes (SLURM_CLUSTER_NAME)
        self.node = socket.gethostname().split(".")[0]
        self.conf = self.root / "slurm.conf"
        self.daemons: list[subprocess.Popen[bytes]] = []

    @property
    def env(self) -> dict[str, str]:
        """A bare environment for Slurm's clients: what a user's login shell would have, no FARM_*."""
        return {
            "PATH": SBIN_PATH,
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8",
            "SLURM_CONF": str(self.conf),
        }

    def _daemon(self, name: str, *args: str) -> None:
        log = (self.root / f"{name}.out").open("ab")
        process = subprocess.Popen(
            [sbin(name), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**self.env, "FARM_TEST_SLURM": str(self.root)},
            start_new_session=True,
        )
        self.daemons.append(process)

    def start(self) -> None:
        for tool in ("munged", "slurmctld", "slurmd", "sbatch"):
            sbin(tool)
        key = self.root / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        socket_path = self.root / "munge.sock"
        self._daemon(
            "munged", "--foreground", "--force", f"--socket={socket_path}", f"--key-file={key}",
            f"--pid-file={self.root / 'munged.pid'}", f"--log-file={self.root / 'munged.log'}",
            f"--seed-file={self.root / 'munge.seed'}",
        )  # fmt: skip
        wait_for(socket_path.exists, 20, "munged's socket")
        ctld_port, slurmd_port = free_ports(2)
        (self.root / "state").mkdir()
        (self.root / "spool").mkdir()
        self.conf.write_text(
            "\n".join(
                [
                    f"ClusterName={self.cluster}",
                    f"SlurmctldHost={self.node}(127.0.0.1)",
                    f"SlurmctldPort={ctld_port}",
                    f"SlurmdPort={slurmd_port}",
                    "SlurmUser=root",
                    "SlurmdUser=root",
                    "AuthType=auth/munge",
                    "CredType=cred/munge",
                    f"AuthInfo=socket={socket_path}",
                    f"StateSaveLocation={self.root / 'state'}",
                    f"SlurmdSpoolDir={self.root / 'spool'}",
                    f"SlurmctldPidFile={self.root / 'slurmctld.pid'}",
                    f"SlurmdPidFile={self.root / 'slurmd.pid'}",
                    f"SlurmctldLogFile={self.root / 'slurmctld.log'}",
                    f"SlurmdLogFile={self.root / 'slurmd.log'}",
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "JobAcctGatherType=jobacct_gather/none",
                    "AccountingStorageType=accounting_storage/none",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_CPU",
                    "MpiDefault=none",
                    "ReturnToService=2",
                    "MinJobAge=600",
                    f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={os.cpu_count() or 1} State=UNKNOWN",
                    f"PartitionName=farm Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
                ]
            )
            + "\n"
        )
        self._daemon("slurmctld", "-D", "-i", "-f", str(self.conf))
        self._daemon("slurmd", "-D", "-N", self.node, "-f", str(self.conf))
        wait_for(
            lambda: self.node_state() == "idle", 60, f"the Slurm node to be idle\n{self.logs()}", every=0.5
        )

    def run(self, *args: str, cwd: Path | None = None) -> str:
        done = subprocess.run(args, env=self.env, cwd=cwd, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise AssertionError(f"{' '.join(args)}: {done.stderr}\n{self.logs()}")
        return done.stdout

    def node_state(self) -> str:
        with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
            return self.run("sinfo", "--noheader", "--format=%T").strip()
        return ""

    def job(self, job_id: str) -> dict[str, str]:
        fields = self.run("scontrol", "--oneliner", "show", "job", job_id).split()
        return dict(f.split("=", 1) for f in fields if "=" in f)

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-20:])
            for p in sorted(self.root.glob("*.log"))
        )

    def _marked(self) -> list[int]:
        """Every process of this cluster: its daemons, their slurmstepds, and the jobs' processes."""
        marks = (f"FARM_TEST_SLURM={self.root}".encode(), f"SLURM_CLUSTER_NAME={self.cluster}".encode())
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != os.getpid():
                with contextlib.suppress(OSError):
                    environ = (entry / "environ").read_bytes().split(b"\0")
                    if any(mark in environ for mark in marks):
                        found.append(int(entry.name))
        return found

    def stop(self) -> None:
        with contextlib.suppress(Exception):  # cancel what still runs and give it KillWait to go
            self.run("scancel", "--user=root")
            wait_for(lambda: not self.run("squeue", "--noheader").strip(), 60, "the jobs to end", every=0.5)
        for process in reversed(self.daemons):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in reversed(self.daemons):
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for pid in self._marked():  # anything left behind (a slurmstepd, a worker, its Blender)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def slurm():  # type: ignore[no-untyped-def]
    cluster = OneNodeSlurm()
    try:
        try:
            cluster.start()
        except Exception as exc:
            service_missing("a one-node Slurm (slurm-wlm and munge)", exc)
        yield cluster
    finally:
        cluster.stop()
    assert cluster._marked() == [], "processes of the test's Slurm outlived it"


def clip_rows(pg_url: str) -> list[dict[str, object]]:
    with create_engine(pg_url).connect() as conn:
        return [dict(r._mapping) for r in conn.execute(text("SELECT name, status, worker FROM clips"))]


@pytest.mark.slow
@pytest.mark.services
@pytest.mark.blender
def test_the_script_runs_workers_on_slurm_that_render_a_clip_and_stop_on_sigterm(  # type: ignore[no-untyped-def]
    farm, pg_farm, pg_url, tmp_path, slurm
) -> None:
    # The database URL carries a password (trust auth ignores it): the script must leave it to the env file,
    # which the job loads as written ($ and ; included, the line unquoted), not as bash would read it.
    secret_url = pg_url.replace("postgres@", "postgres:not-in-the-script$x;false@", 1)
    pg_farm(storage_url=str(tmp_path / "output"), lease_seconds="10")
    folder = tmp_path / "motions"
    folder.mkdir()
    write_short_motions(folder, ["07_01"], 40)  # one clip of 10 frames: seconds on a CPU
    assert farm("catalog", "import", "amass", str(folder), "--name", "short").code == 0
    queued = farm("enqueue", "--sequences", "short_all", "--runs", "0", "--json")
    assert json.loads(queued.out)["new_clips"] == 1, queued.err
    pg_farm(database_url=secret_url)
    env_file = tmp_path / "secrets.env"
    env_file.write_text(f"FARM_DATABASE_URL={secret_url}\n")
    env_file.chmod(0o600)
    script = tmp_path / "workers.sbatch"
    result = farm(
        "slurm", "script", "--nodes", "1", "--gpus-per-node", "1", "--device", "cpu", "--time", "00:20:00",
        "--stop-before", "120", "--env-file", str(env_file), "--output", str(tmp_path / "job-%j.out"),
        "--out", str(script),
    )  # fmt: skip
    assert result.code == 0, result.err
    assert "not-in-the-script" not in script.read_text()

    started = time.monotonic()
    job_id = slurm.run("sbatch", "--parsable", str(script), cwd=tmp_path).strip().split(";")[0]
    log = tmp_path / f"job-{job_id}.out"

    def story() -> str:
        return f"{log.read_text(errors='replace') if log.exists() else '(no job log)'}\n{slurm.logs()}"

    rows = wait_for(
        lambda: [r for r in clip_rows(pg_url) if r["status"] in ("done", "failed")],
        300,
        f"the clip\n{story()}",
    )
    assert [r["status"] for r in rows] == ["done"], story()
    assert (tmp_path / "output" / "short" / "train").exists() or (
        tmp_path / "output" / "short" / "test"
    ).exists()
    rendered = time.monotonic() - started
    assert slurm.job(job_id)["JobState"] == "RUNNING", story()

    # What Slurm sends at the time limit (--signal) or `scancel --signal=TERM`: SIGTERM to the step's tasks.
    slurm.run("scancel", "--signal=TERM", job_id)
    wait_for(
        lambda: slurm.job(job_id)["JobState"] not in ("RUNNING", "COMPLETING"),
        120,
        f"the job to end\n{story()}",
    )
    job = slurm.job(job_id)
    assert (job["JobState"], job["ExitCode"]) == ("COMPLETED", "0:0"), story()
    assert re.search(r"warm shutdown", log.read_text(), re.I), story()
    print(
        f"slurm job {job_id}: clip done {rendered:.0f} s after sbatch, stopped {time.monotonic() - started:.0f} s"
    )


@pytest.mark.slow
@pytest.mark.services
def test_slurm_sends_the_workers_sigterm_before_the_time_limit_and_the_job_completes(  # type: ignore[no-untyped-def]
    farm, pg_farm, tmp_path, slurm
) -> None:
    pg_farm(storage_url=str(tmp_path / "output"))
    script = tmp_path / "workers.sbatch"
    result = farm(
        "slurm", "script", "--device", "cpu", "--time", "00:02:00", "--stop-before", "60",
        "--output", str(tmp_path / "job-%j.out"), "--out", str(script),
    )  # fmt: skip
    assert result.code == 0, result.err
    started = time.monotonic()
    job_id = slurm.run("sbatch", "--parsable", str(script), cwd=tmp_path).strip().split(";")[0]
    log = tmp_path / f"job-{job_id}.out"
    # The limit is 2 minutes; Slurm signals the steps when at most 60 s (+ its 30 s check interval) are left.
    wait_for(
        lambda: slurm.job(job_id)["JobState"] not in ("PENDING", "RUNNING", "COMPLETING"),
        150,
        f"the job to end\n{slurm.logs()}",
    )
    job, text = slurm.job(job_id), log.read_text()
    elapsed = time.monotonic() - started
    assert (job["JobState"], job["ExitCode"]) == ("COMPLETED", "0:0"), (
        text
    )  # not TIMEOUT: the worker left first
    assert elapsed < 120 and re.search(r"ready\.(.|\n)*warm shutdown", text, re.I), text
    print(f"slurm job {job_id}: SIGTERM from --signal, the job completed {elapsed:.0f} s after sbatch")
