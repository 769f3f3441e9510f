"""`farm slurm script`: an sbatch script that runs `farm worker`s on a Slurm cluster against the central services.

The script asks for N nodes with one task per GPU (one worker each), exports the farm's non-secret FARM_*
settings as they are where it was written, loads an env file on the shared file system for the secrets, and
starts every worker as a task of one `srun` step, from this environment's `farm` or an Apptainer image.
The env file is read by `farm slurm env` (python-dotenv, values as written), never sourced by bash: a password
holding `$`, a backtick or `;` arrives as written, and the job reads the file as `farm slurm script` checked it.
Every value the script holds is quoted for bash or refused.
Slurm sends the steps SIGTERM `--stop-before` seconds before the time limit (`#SBATCH --signal`): Celery's warm
shutdown finishes the clip in hand, the worker exits, and the job ends.
"""

from __future__ import annotations

import io
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Annotated, get_args

import typer

from farm.core.choices import Device
from farm.core.errors import BadUsage, FarmError

app = typer.Typer(help="Run workers on a Slurm cluster.", no_args_is_help=True)

# A FARM_* variable with one of these in its name holds a secret (FARM_DASHBOARD_AUTH, ...).
SECRET_WORDS = ("PASSWORD", "SECRET", "TOKEN", "AUTH", "KEY")
SAFE_VALUE = re.compile(r"[A-Za-z0-9_.,:@%+=/-]+")  # what may follow `#SBATCH --option=` (fullmatch)
TIME = re.compile(r"(?:([0-9]+)-)?([0-9]+):([0-5][0-9]):([0-5][0-9])")
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # what bash can export
CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # a newline would end a comment, an #SBATCH line or the heredoc

TEMPLATE = """\
#!/bin/bash
# Farm workers on Slurm, written by `farm slurm script` (surreal-farm). Submit it with `sbatch {script_name}`.
# {nodes} node(s) x {workers} worker(s), one per {unit}, rendering with --device {device}; each worker is
# one task of the srun step below. Stop them with `scancel --signal=TERM <jobid>`: each finishes its clip first.
#SBATCH --job-name={job_name}
#SBATCH --nodes={nodes}
#SBATCH --ntasks-per-node={workers}
{resources}#SBATCH --time={time}
{placement}#SBATCH --signal=TERM@{stop_before}
#SBATCH --output={output}
{extra}set -euo pipefail

# The farm's settings where this script was written (secrets left out: they come from the env file below).
{exports}
{env_file_block}
read -r -d '' WORKER <<'FARM_WORKER' || true
{gpu_block}echo "farm worker $SLURM_PROCID (node $SLURMD_NODENAME, task $SLURM_LOCALID): device {device}, CUDA_VISIBLE_DEVICES=${{CUDA_VISIBLE_DEVICES:-none}}" >&2
exec {command}
FARM_WORKER

# One step, one task per worker; srun passes SIGTERM (scancel --signal=TERM, or --signal above) to every task,
# and the exec'd worker takes it as Celery's warm shutdown. A task that fails does not stop the others.
srun --export=ALL --label --kill-on-bad-exit=0 --nodes={nodes} --ntasks-per-node={workers} {srun_cpus}\\
    bash -c "$WORKER"
"""

ENV_FILE_BLOCK = """
# The secrets (database and broker passwords, S3 keys, FARM_DASHBOARD_AUTH) live in this file on the shared
# file system (KEY=value lines, mode 0600); it is read when the job starts and overrides the above. The farm
# reads it with python-dotenv and prints each variable as `export NAME='value'`, quoted for bash, so that its
# values arrive as written ($, backticks, ; and spaces included): bash never reads the file itself.
FARM_ENV_FILE={env_file}
if [ ! -r "$FARM_ENV_FILE" ]; then
    echo "farm slurm: cannot read the env file $FARM_ENV_FILE (it must be on a file system this node mounts)" >&2
    exit 1
fi
secrets=$({env_command} < "$FARM_ENV_FILE") || {{
    echo "farm slurm: cannot load the env file $FARM_ENV_FILE" >&2
    exit 1
}}
eval "$secrets"
unset secrets
"""

# Task i of a node takes the i-th GPU Slurm gave the job there (CUDA_VISIBLE_DEVICES lists them, numbered in
# the job's device cgroup or by their host index), or GPU i where Slurm set no list.
GPU_BLOCK = """\
IFS=, read -r -a gpus <<< "${CUDA_VISIBLE_DEVICES:-}"
if [ "${#gpus[@]}" -gt "$SLURM_LOCALID" ]; then
    export CUDA_VISIBLE_DEVICES="${gpus[$SLURM_LOCALID]}"
else
    export CUDA_VISIBLE_DEVICES="$SLURM_LOCALID"
fi
"""


def is_secret(name: str, value: str) -> bool:
    """Whether a FARM_* variable holds a secret: a secret-like name or a URL with a password."""
    if any(word in name.upper() for word in SECRET_WORDS):
        return True
    if "://" in value:
        from urllib.parse import urlsplit

        try:
            return urlsplit(value).password is not None
        except ValueError:
            return True  # not parseable: do not risk writing it
    return False


def _seconds(time: str) -> int:
    match = TIME.fullmatch(time)
    if match is None:
        raise BadUsage(f"--time {time!r} must be HH:MM:SS or D-HH:MM:SS, e.g. 24:00:00")
    days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def _checked(option: str, value: str | None) -> str | None:
    if value is not None and not SAFE_VALUE.fullmatch(value):
        raise BadUsage(f"{option} {value!r} holds characters an #SBATCH line cannot take")
    return value


def _one_line(option: str, value: str) -> str:
    if CONTROL.search(value):
        raise BadUsage(
            f"{option} {value!r} holds a newline or another control character, which the script cannot hold"
        )
    return value


def read_env(data: bytes, where: str) -> dict[str, str]:
    """An env file's variables as python-dotenv parses them, values as written.

    No `${VAR}` expansion: a value means the same on the login node that checks it and on the compute node
    that loads it. What bash cannot export is refused, naming the line; a name without `=` sets nothing, as
    with python-dotenv's load_dotenv.
    """
    from dotenv.parser import parse_stream

    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise FarmError(f"{where} is not UTF-8 text") from None
    values: dict[str, str | None] = {}
    for binding in parse_stream(io.StringIO(text)):
        line, name, value = binding.original.line, binding.key, binding.value
        if binding.error:
            raise FarmError(f"line {line} of {where} is not a KEY=value line python-dotenv can read")
        if name is None:
            continue  # a blank line or a comment
        if not NAME.fullmatch(name):
            raise FarmError(
                f"line {line} of {where}: {name!r} is not a variable name (letters, digits and _, not first a digit)"
            )
        if value is not None and "\0" in value:
            raise FarmError(f"line {line} of {where}: the value of {name} holds a NUL, which no variable can")
        values[name] = value
    return {k: v for k, v in values.items() if v is not None}


def _env_file_values(env_file: Path) -> dict[str, str]:
    if not env_file.is_file():
        raise FarmError(
            f"--env-file {env_file} does not exist; write the secrets there first (KEY=value lines, mode 0600)"
        )
    values = read_env(env_file.read_bytes(), str(env_file))
    if env_file.stat().st_mode & 0o077:
        from farm.cli.console import err

        err.print(f"warning: {env_file} is readable by others; `chmod 600 {env_file}`", highlight=False)
    return values


def _farm_command(image: Path | None, device: str) -> list[str]:
    if image is not None:
        return ["apptainer", "exec", *(["--nv"] if device != "cpu" else []), str(image), "farm"]
    farm = Path(sys.executable).parent / "farm"  # this environment's farm (a venv's bin/, unresolved)
    if not farm.exists():
        import shutil

        found = shutil.which("farm")
        if found is None:
            raise FarmError("no `farm` next to this Python or on PATH; install the farm or pass --image")
        farm = Path(found)
    if CONTROL.search(str(farm.absolute())):
        raise FarmError(
            f"the farm's path {str(farm)!r} holds a control character; install it elsewhere or pass --image"
        )
    return [str(farm.absolute())]


def write_script(
    *,
    nodes: int,
    gpus_per_node: int,
    time: str,
    partition: str | None,
    account: str | None,
    device: str,
    image: Path | None,
    env_file: Path | None,
    cpus_per_worker: int | None,
    stop_before: int,
    job_name: str,
    output: str,
    sbatch: list[str],
    environ: dict[str, str],
    script_name: str = "farm-workers.sbatch",
) -> tuple[str, list[str]]:
    """The sbatch script and the names of the FARM_* variables left out of it as secrets."""
    if device not in get_args(Device):
        raise BadUsage(f"--device {device!r} must be cpu, cuda or optix")
    # Slurm sends the signal up to a minute early (it looks every 30 s, with 30 s to spare): leave the workers
    # that minute to start, so that the signal never finds one before Celery listens for it.
    if stop_before + 60 > _seconds(time):
        raise BadUsage(f"--stop-before {stop_before} s must be at least a minute shorter than --time {time}")
    for option, value in (("--partition", partition), ("--account", account), ("--job-name", job_name)):
        _checked(option, value)
    _checked("--output", output)
    for line in sbatch:
        if CONTROL.search(line) or not line.startswith("-"):
            raise BadUsage(f"--sbatch {line!r} must be one sbatch option such as --mem=32G")
    for option, path in (("--image", image), ("--env-file", env_file)):
        if path is not None:
            _one_line(option, str(path))

    from_file = _env_file_values(env_file) if env_file is not None else {}
    farm_vars = {k: v for k, v in sorted(environ.items()) if k.startswith("FARM_") and k != "FARM_DEVICE"}
    for name in farm_vars:
        if not NAME.fullmatch(name):
            raise FarmError(
                f"the environment variable {name!r} is not a variable name bash can export; unset it"
            )
    secrets = [k for k, v in farm_vars.items() if is_secret(k, v)]
    missing = [k for k in secrets if k not in from_file]
    if missing:
        hold, them = ("holds a secret", "it") if len(missing) == 1 else ("hold secrets", "them")
        where = f"{env_file} does not set {them}" if env_file else "no --env-file was given"
        raise FarmError(
            f"{', '.join(missing)} {hold}, which the script never holds, and {where}; put {them} in an "
            "env file on the shared file system (KEY=value lines, chmod 600) and pass it with --env-file"
        )
    effective = {**farm_vars, **from_file}
    for name, embedded in (("FARM_DATABASE_URL", "sqlite"), ("FARM_BROKER_URL", "sqla+sqlite")):
        url = effective.get(name, embedded)
        if url.startswith(embedded):
            raise FarmError(
                f"{name} is {'unset' if name not in effective else 'a SQLite file'}: workers on a cluster need "
                "the central PostgreSQL and Redis; set it in the environment or the --env-file"
            )

    exports = "\n".join(f"export {k}={shlex.quote(v)}" for k, v in farm_vars.items() if k not in secrets)
    gpu = device != "cpu"
    resources = (f"#SBATCH --gres=gpu:{gpus_per_node}\n" if gpu else "") + (
        f"#SBATCH --cpus-per-task={cpus_per_worker}\n" if cpus_per_worker else ""
    )
    placement = "".join(
        f"#SBATCH --{name}={value}\n"
        for name, value in (("partition", partition), ("account", account))
        if value
    )
    farm = _farm_command(image, device)
    command = [*farm, "worker", "--device", device, "--concurrency", "1"]
    # The env file is loaded by the batch step, on the host; it needs no GPU.
    env_command = [*(farm if image is None else ["apptainer", "exec", str(image), "farm"]), "slurm", "env"]
    script = TEMPLATE.format(
        script_name=script_name,
        nodes=nodes,
        workers=gpus_per_node,
        unit="GPU" if gpu else "task (CPU mode: no GPU requested)",
        device=device,
        job_name=job_name,
        resources=resources,
        time=time,
        placement=placement,
        stop_before=stop_before,
        output=output,
        extra="".join(f"#SBATCH {line}\n" for line in sbatch),
        exports=exports or "# (none set)",
        env_file_block=ENV_FILE_BLOCK.format(
            env_file=shlex.quote(str(env_file.absolute())), env_command=shlex.join(env_command)
        )
        if env_file is not None
        else "",
        gpu_block=GPU_BLOCK if gpu else "",
        command=shlex.join(command),
        srun_cpus=f"--cpus-per-task={cpus_per_worker} " if cpus_per_worker else "",
    )
    return script, secrets


@app.command("script")
def script(
    nodes: Annotated[int, typer.Option(min=1, help="Nodes; scale the farm with more.")] = 1,
    gpus_per_node: Annotated[
        int,
        typer.Option(
            min=1,
            help="GPUs per node, one worker each (with --device cpu: workers per node, no GPU requested).",
        ),
    ] = 1,
    time: Annotated[str, typer.Option(help="The job's time limit, HH:MM:SS or D-HH:MM:SS.")] = "24:00:00",
    partition: Annotated[str | None, typer.Option(help="Slurm partition (default: the cluster's).")] = None,
    account: Annotated[str | None, typer.Option(help="Slurm account to charge.")] = None,
    device: Annotated[Device | None, typer.Option(help="The render device (default: FARM_DEVICE).")] = None,
    image: Annotated[
        Path | None, typer.Option(help="An Apptainer image (apptainer build farm.sif docker/farm.def).")
    ] = None,
    env_file: Annotated[
        Path | None,
        typer.Option(
            help="Env file on the shared file system with the secrets (KEY=value lines, read by python-dotenv "
            "with values as written); the job loads it at start."
        ),
    ] = None,
    cpus_per_worker: Annotated[
        int | None, typer.Option(min=1, help="CPUs per worker (sbatch --cpus-per-task).")
    ] = None,
    stop_before: Annotated[
        int,
        typer.Option(
            min=1, help="Seconds before the time limit at which workers get SIGTERM and finish their clip."
        ),
    ] = 300,
    job_name: Annotated[str, typer.Option(help="The job's name.")] = "farm-workers",
    output: Annotated[str, typer.Option(help="The job's log (sbatch --output).")] = "farm-workers-%j.out",
    sbatch: Annotated[
        list[str] | None, typer.Option(help="More sbatch options, e.g. --sbatch=--mem=32G (repeatable).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Write the script here (default: standard output).")
    ] = None,
) -> None:
    """Write an sbatch script that starts one `farm worker` per GPU on each node against the central services."""
    from farm.cli.console import err
    from farm.cli.console import out as stdout
    from farm.core.settings import get_settings

    if out is not None:
        _one_line("--out", str(out))  # its name is in the script's first comment
    text, secrets = write_script(
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        time=time,
        partition=partition,
        account=account,
        device=device or get_settings().device,
        image=image.absolute() if image is not None else None,
        env_file=env_file,
        cpus_per_worker=cpus_per_worker,
        stop_before=stop_before,
        job_name=job_name,
        output=output,
        sbatch=sbatch or [],
        environ=dict(os.environ),
        script_name=out.name if out is not None else "farm-workers.sbatch",
    )
    if image is not None and not image.exists():
        err.print(
            f"warning: {image} does not exist yet (apptainer build {image} docker/farm.def)", highlight=False
        )
    if secrets:
        err.print(f"left out of the script (the env file sets them): {', '.join(secrets)}", highlight=False)
    if out is None:
        typer.echo(text, nl=False)
        return
    # Written whole or not at all: a temporary file next to it, renamed over it.
    partial = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with partial.open("x") as file:
            file.write(text)
        partial.replace(out)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise FarmError(f"cannot write --out {out}: {exc.strerror or exc}") from None
    stdout.print(f"wrote {out}; submit it with `sbatch {out}`", highlight=False, soft_wrap=True)


@app.command("env")
def env() -> None:
    """Print an env file (standard input) as bash `export NAME='value'` lines, values as python-dotenv reads them.

    The job of `farm slurm script` loads its --env-file so: bash never reads the file, and the job reads it as
    the script command checked it."""
    values = read_env(sys.stdin.buffer.read(), "the env file")
    sys.stdout.buffer.write("".join(f"export {k}={shlex.quote(v)}\n" for k, v in values.items()).encode())
    sys.stdout.buffer.flush()
