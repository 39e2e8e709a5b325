"""`modelgate demo`: the bundled demo, its model hub and its own release environment.

    modelgate demo init                      # build the demo hub; make the demo's keys and release.demo.yaml
    modelgate demo gate [--variant NAME] ... # `modelgate gate` on release.demo.yaml, signed with the demo's gate key
    modelgate demo approve|promote|rollback|history|resolve ...   # those commands on release.demo.yaml, their
                                             # audit events sealed with the demo's audit key

The demo's release environment is what a team's `release-gate` and `production` environments hold, made on this
machine for the demo only: two Ed25519 keys (gate-key.pem, audit-key.pem under the model home's `demo/`, mode
0600, generated once, never in git) and release.demo.yaml (demo/profile.py), which trusts exactly those two.
Every other argument goes to the command unchanged (`modelgate demo approve --help` is approve's help)."""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import functools
import os
import stat
from pathlib import Path
from typing import Any

from pipeline.cli.common import Parser, home, with_config
from pipeline.core.secrets import AUDIT_KEY_ENV
from pipeline.errors import BadInput
from pipeline.util.progress import progress_for

KEYS = {"gate": "gate-key.pem", "audit": "audit-key.pem"}
FORWARDED = ("gate", "approve", "promote", "rollback", "history", "resolve")


def keys_dir(config: Path) -> Path:
    return home(config) / "demo"


def _key(path: Path) -> dict[str, Any]:
    """`path`'s public entry for release.yaml's `signing` (generated first when missing; refused when others can
    read it). Valid from the day the key was made."""
    from pipeline.releasing import signing

    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        signing.generate(path)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise BadInput(f"the demo's private key is readable by others (mode {mode:o}); chmod 600 it",
                       file=str(path))
    signer = signing.load_signer(file=path)
    assert signer is not None  # a file was given
    made = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).date().isoformat()
    raw = signing.raw_public(signer.private.public_key())
    return {"id": signer.key_id, "public_key": base64.b64encode(raw).decode(), "not_before": made,
            "not_after": None}


def _manifest(config: Path) -> dict[str, Any]:
    from pipeline.demo.hub import load_complete_manifest

    manifest = load_complete_manifest(home(config))
    if manifest is None:
        raise BadInput("the demo hub is not built: run `modelgate demo init` (scripts/demo.sh does)",
                       file=str(home(config) / "hub"))
    return manifest


def prepare(config: Path, variant: str | None = None) -> Path:
    """The demo's keys (made once) and release.demo.yaml pinning `variant` (None: the variant it pins now, else
    the one release.yaml pins, else `instruct`)."""
    from pipeline.demo import profile

    manifest = _manifest(config)
    profile_file = profile.profile_path(config)
    chosen = variant or profile.current_variant(profile_file, manifest) or \
        profile.current_variant(config, manifest) or "instruct"
    keys = {name: _key(keys_dir(config) / file) for name, file in KEYS.items()}
    return profile.write_profile(config, manifest, chosen, [keys["gate"]], [keys["audit"]])


def cmd_demo_init(args: argparse.Namespace) -> int:
    from pipeline.demo.hub import publish_demo_hub

    hub = Path(args.home).resolve() if args.home else home(args.config)
    manifest = publish_demo_hub(hub, progress=progress_for("demo"))
    for name, variant in manifest["variants"].items():
        print(f"{name:<10} {variant['revision']}")
    print(f"hub: {manifest['repo_path']}")
    if not args.home:  # the demo's release environment lives beside the hub it pins
        profile_file = prepare(args.config, "instruct")
        print(f"release profile: {profile_file} (trusts only the demo's keys in {keys_dir(args.config)})")
    return 0


def forward(command: str, args: argparse.Namespace, extra: list[str]) -> list[str]:
    """The command line `modelgate demo <command> ...` stands for, its keys made ready (module doc)."""
    profile_file = prepare(args.config, getattr(args, "variant", None))
    argv = [command, "--config", str(profile_file), *extra]
    if command == "gate":
        argv += ["--signing-key-file", str(keys_dir(args.config) / KEYS["gate"])]
    else:  # what the production environment holds: the audit key that seals approvals, promotions, rollbacks
        os.environ[AUDIT_KEY_ENV] = (keys_dir(args.config) / KEYS["audit"]).read_text(encoding="utf-8")
    return argv


def register(sub: Any) -> None:
    """The parsers of `demo` (`sub`: the top-level subparsers)."""
    demo = sub.add_parser("demo", help="the bundled demo: its model hub and its own release environment")
    demo_sub = demo.add_subparsers(dest="demo_command", required=True, parser_class=Parser)
    init = with_config(demo_sub.add_parser("init", help="build the demo hub, the demo's keys and release.demo.yaml"))
    init.add_argument("--home", help="where the hub goes (default: $MODELGATE_HOME or .modelgate/); with it, only "
                                     "the hub is built")
    init.set_defaults(func=cmd_demo_init)
    for command in FORWARDED:
        p = with_config(demo_sub.add_parser(command, add_help=False, help=f"`modelgate {command}` on the demo's "
                                            "release profile (other arguments go to it unchanged)"))
        if command == "gate":
            p.add_argument("--variant", help="pin this demo hub variant first (e.g. template, aa); default: the "
                                             "one pinned now")
        p.set_defaults(forward=functools.partial(forward, command))
