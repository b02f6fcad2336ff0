"""A Mosquitto 2.0 config that enforces the same fleet security as the amqtt plugins.

Mosquitto's own files cannot say "this client id belongs to that user", and its `pattern`
ACL lines apply to every user, so the config loads our plugin (`mosquitto_plugin/`, built
here with `cc`): it derives each user's password from the fleet secret, binds client ids to
their users, and reads each role's filters from a rules file written from `rules_for`.
"""

from __future__ import annotations

import getpass
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from broker.acl import rules_for
from protocol.identity import _USER_NAME, CLIENT_ID_SEPARATOR, FIXED_USERS, GATEWAY_PREFIX, Role
from protocol.topics import Topics

PLUGIN_SOURCE = Path(__file__).with_name("mosquitto_plugin") / "fleetroom_auth.c"
PLUGIN_NAME = "fleetroom_auth.so"
BUILD_PACKAGES = ("gcc", "mosquitto-dev", "libmosquitto-dev", "libssl-dev")
MAX_PACKET_BYTES = 256 * 1024  # one message, headers included: bounds what one client can make the broker keep
MAX_QUEUED_MESSAGES = 1_000_000  # per client, above those in flight; see SCALE_SETTINGS
MAX_QUEUED_BYTES = 512 * 1024 * 1024  # per client; whichever of the two limits comes first
MAX_INFLIGHT_MESSAGES = 1000  # per client, QoS 1 messages sent and not yet acknowledged
MEMORY_LIMIT_BYTES = 3 * 1024**3  # the broker's whole heap
RULE_KINDS = ("publish", "read", "retain")

SCALE_SETTINGS: tuple[tuple[str, str], ...] = (
    ("persistence false",
     "nothing is kept across a restart (clean sessions, retained statuses are sent again): writing a "
     "million-entry database to disk every autosave would stall the broker's only thread"),
    (f"max_queued_messages {MAX_QUEUED_MESSAGES}",
     "Mosquitto's default of 1,000 per client drops QoS 1 messages (and QoS 0 telemetry) as soon as a reader is a "
     "second behind a fleet joining at 50,000 cars a second, or subscribes late to thousands of retained "
     "rosters; a million holds a whole join of the essay's fleet for each reader"),
    (f"max_queued_bytes {MAX_QUEUED_BYTES}",
     "the same queue bounded in bytes (frames reach 240 KiB): three readers that stop reading cost at "
     "most 1.5 GiB, not the machine"),
    (f"max_inflight_messages {MAX_INFLIGHT_MESSAGES}",
     "the default of 20 unacknowledged QoS 1 messages per client caps a reader at 20 per round trip; a "
     "reader that acknowledges a batch at a time needs a window of a batch (bounded: it counts in memory)"),
    (f"memory_limit {MEMORY_LIMIT_BYTES}",
     "a last guard: beyond 3 GiB the broker drops a message and disconnects its client, which the "
     "reconnect helpers survive, instead of the kernel killing the broker or its neighbours (the "
     "whole stack must fit in 6 GiB; Debian's build tracks its heap, see $SYS/broker/heap/current)"),
    ("set_tcp_nodelay true",
     "an assignment or a result is one small packet that must not wait up to 40 ms for Nagle's algorithm "
     "(assignment p99 <= 2 s, end-to-end p99 <= 1 s)"),
)
"""Settings that keep consumers from losing QoS 1 messages at a million cars, each with its reason."""


def scale_lines() -> list[str]:
    """`SCALE_SETTINGS` as mosquitto.conf lines, each under its reason as a comment."""
    return [line for setting, why in SCALE_SETTINGS for line in (f"# {why}", setting)]


def anonymous_conf(port: int, host: str = "127.0.0.1") -> str:
    """A mosquitto.conf for a load test or demo without logins: the scale settings, one listener."""
    return "\n".join(["# written by fleetroom for an anonymous run", "allow_anonymous true",
                      f"max_packet_size {MAX_PACKET_BYTES}", *scale_lines(),
                      f"listener {port} {host}", ""])


class PluginBuildError(RuntimeError):
    """The Mosquitto plugin could not be compiled; the message is one line for the user."""


def compile_command(output: Path, source: Path = PLUGIN_SOURCE) -> list[str]:
    """The `cc` command line that builds the plugin."""
    return ["cc", "-shared", "-fPIC", "-O2", "-Wall", "-o", str(output), str(source), "-lcrypto"]


def build_plugin(out_dir: Path) -> Path:
    """Compile the Mosquitto plugin into `out_dir`; raise `PluginBuildError` with one line if it fails."""
    install = f"install Debian's {' '.join(BUILD_PACKAGES)} (apt-get install -y {' '.join(BUILD_PACKAGES)})"
    if shutil.which("cc") is None:
        raise PluginBuildError(f"cannot build the Mosquitto plugin: no C compiler `cc`; {install}")
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / PLUGIN_NAME
    # build beside the target and rename: a running mosquitto keeps its mapped copy intact
    fd, tmp_name = tempfile.mkstemp(prefix=".fleetroom_auth.", suffix=".so", dir=out_dir)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        proc = subprocess.run(compile_command(tmp, PLUGIN_SOURCE), capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            missing = re.search(r"fatal error: ([\w/.]+\.h): No such file", proc.stderr)
            if missing or "cannot find -lcrypto" in proc.stderr:
                what = missing.group(1) if missing else "libcrypto"
                raise PluginBuildError(f"cannot build the Mosquitto plugin: {what} is missing; {install}")
            first = next((line for line in proc.stderr.splitlines() if "error" in line), proc.stderr.strip())
            raise PluginBuildError(f"cannot build the Mosquitto plugin: {first[:300]}")
        tmp.chmod(0o755)
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def rules_file(topics: Topics) -> str:
    """The plugin's rules: who is who (from `protocol.identity`) and each role's filters (from `rules_for`)."""
    out = [
        "# generated by `fleetroom broker --write-mosquitto-config` from broker.acl.rules_for and",
        "# protocol.identity; read by fleetroom_auth.so. %u stands for the user's own name.",
        f"user_name {_USER_NAME.pattern}",
        f"client_id_separator {CLIENT_ID_SEPARATOR}",
    ]
    out += [f"fixed {name} {role.value}" for name, role in FIXED_USERS.items()]
    out += [f"prefix {GATEWAY_PREFIX} {Role.GATEWAY.value}", f"default {Role.VEHICLE.value}"]
    for role, rules in rules_for(topics).items():
        for kind in RULE_KINDS:
            out += [f"{kind} {role.value} {f}" for f in getattr(rules, kind)]
    return "\n".join(out) + "\n"


def mosquitto_conf(
    directory: Path, port: int, host: str = "127.0.0.1", *, plugin: Path | None = None,
    extra_lines: Sequence[str] = (),
) -> str:
    """A mosquitto.conf that listens on `host:port` and secures it with the plugin and files in `directory`.

    `extra_lines` (TLS settings, say) follow the `listener` line, so they apply to that listener.
    """
    d = directory.resolve()
    plugin = (plugin or d / PLUGIN_NAME).resolve()
    return "\n".join(
        [
            "# generated by `fleetroom broker --write-mosquitto-config`",
            # run as whoever wrote these files (as root, mosquitto would switch to a user that
            # cannot read the 0600 secret file)
            f"user {getpass.getuser()}",
            "per_listener_settings false",
            "allow_anonymous false",
            f"plugin {plugin}",
            f"plugin_opt_secret_file {d / 'secret'}",
            f"plugin_opt_rules_file {d / 'rules'}",
            f"max_packet_size {MAX_PACKET_BYTES}",
            *scale_lines(),
            # a client that left a persistent session (clean session off) does not keep it, and its
            # queue of up to max_queued_messages, for ever: any valid login could otherwise pile them up
            "persistent_client_expiration 1h",
            f"listener {port} {host}",
            *extra_lines,
            "",
        ]
    )


def write_mosquitto_config(
    directory: Path,
    secret: bytes,
    topics: Topics,
    *,
    port: int = 1883,
    host: str = "127.0.0.1",
    extra_lines: Sequence[str] = (),
    plugin: Path | None = None,
) -> list[Path]:
    """Write mosquitto.conf, secret and rules into `directory` and build the plugin there; return the paths.

    With `plugin`, that already built plugin is used instead of compiling one.
    """
    if not secret or secret != secret.strip():
        raise ValueError("the fleet secret must not be empty or start or end with white space")
    built = plugin if plugin is not None else build_plugin(directory)
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "mosquitto.conf"
    secret_path = directory / "secret"
    secret_path.touch(mode=0o600)
    secret_path.chmod(0o600)  # before the secret is written, whatever the umask
    secret_path.write_bytes(secret)
    rules = directory / "rules"
    rules.write_text(rules_file(topics))
    conf.write_text(mosquitto_conf(directory, port, host, plugin=built, extra_lines=extra_lines))
    for path in (rules, conf):
        path.chmod(0o644)
    return [conf, secret_path, rules, built]
