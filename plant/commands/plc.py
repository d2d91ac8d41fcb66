"""`plant plc`: commissioning commands that read and write PLC tags by name."""

from __future__ import annotations

import asyncio
import fnmatch
import json
import logging
from pathlib import Path
from typing import Annotated

import typer

from drivers.plc import (
    PlcClient,
    PlcError,
    Tag,
    TagMap,
    TagMapError,
    TagValueError,
    UnknownTagError,
    Value,
    load_tag_map,
)
from plant.commands import Ctx, ctx_of, err, out
from plant.config import ConfigError, PlantConfig

TAG_MAP_FILE = "plc.toml"

app = typer.Typer(
    help="Read and write line PLC tags by name (Modbus TCP commissioning).",
    no_args_is_help=True,
)


def plc_tag_map(config_dir: Path) -> TagMap:
    """Load config/plc.toml; a bad map is a ConfigError naming the file and the tag."""
    try:
        return load_tag_map(config_dir / TAG_MAP_FILE)
    except TagMapError as exc:
        raise ConfigError(str(exc)) from None


def plc_client(cfg: PlantConfig, tag_map: TagMap) -> PlcClient:
    """A client for the PLC configured in plant.toml [plc]."""
    return PlcClient(cfg.plc.host, cfg.plc.port, tag_map, timeout_s=cfg.plc.timeout_s)


def _fail(message: str, code: int) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _expand(tag_map: TagMap, patterns: list[str]) -> list[str]:
    """Tag names and shell-style patterns ('counters.*') -> tag names in map order."""
    names: list[str] = []
    for pattern in patterns:
        if any(ch in pattern for ch in "*?["):
            hits = [n for n in tag_map.tags if fnmatch.fnmatchcase(n, pattern)]
            if not hits:
                raise _fail(f"no tag matches '{pattern}'", 2)
            names.extend(hits)
        else:
            try:
                names.append(tag_map.tag(pattern).name)
            except UnknownTagError as exc:
                raise _fail(str(exc), 2) from None
    return list(dict.fromkeys(names))


def _parse(tag: Tag, text: str) -> Value:
    """Command-line text -> a value of the tag's type."""
    if tag.type == "bool":
        words = {"1": True, "true": True, "on": True, "0": False, "false": False, "off": False}
        if text.lower() not in words:
            raise TagValueError(f"tag '{tag.name}': expected true/false, on/off or 1/0")
        return words[text.lower()]
    try:
        number = float(text)
    except ValueError:
        raise TagValueError(f"tag '{tag.name}': '{text}' is not a number") from None
    if tag.type != "float32" and tag.scale == 1.0:
        if not number.is_integer():
            raise TagValueError(f"tag '{tag.name}': {tag.type} needs a whole number")
        return int(number)
    return number


def _shown(tag: Tag, value: Value) -> str:
    return f"{value}{' ' + tag.unit if tag.unit else ''}"


async def _read(client: PlcClient, names: list[str]) -> dict[str, Value]:
    try:
        await client.connect()
        return await client.read(*names)
    finally:
        await client.close()


def _quiet_driver_log() -> None:
    """The command prints the one error line itself; no second line from the driver's log."""
    if not logging.getLogger().handlers:
        logging.getLogger("drivers.plc").addHandler(logging.NullHandler())


@app.command("read")
def read(
    ctx: typer.Context,
    tags: Annotated[list[str], typer.Argument(help="Tag names or patterns, e.g. 'counters.*'.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Read tags from the PLC and print their values with units."""
    c: Ctx = ctx_of(ctx)
    tag_map = plc_tag_map(c.config_dir)
    names = _expand(tag_map, tags)
    client = plc_client(c.plant(), tag_map)
    _quiet_driver_log()
    try:
        values = asyncio.run(_read(client, names))
    except PlcError as exc:
        raise _fail(str(exc), 1) from None
    if as_json:
        out.print_json(json.dumps(values))
        return
    width = max(len(n) for n in names)
    for name in names:
        out.print(f"{name:<{width}}  {_shown(tag_map.tags[name], values[name])}", highlight=False)


@app.command("write")
def write(
    ctx: typer.Context,
    tag: Annotated[str, typer.Argument(help="Tag name, e.g. leach.ph_setpoint.")],
    value: Annotated[str, typer.Argument(help="New value in engineering units (true/false).")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Write one tag on the PLC, after showing the current value and asking to confirm."""
    c: Ctx = ctx_of(ctx)
    tag_map = plc_tag_map(c.config_dir)
    try:
        spec = tag_map.tag(tag)
        new = _parse(spec, value)
        spec.encode(new)  # range and type check before touching the PLC
        if not spec.writable:
            raise TagValueError(f"tag '{tag}' is a {spec.table}: read-only")
    except (UnknownTagError, TagValueError) as exc:
        raise _fail(str(exc), 2) from None
    client = plc_client(c.plant(), tag_map)
    _quiet_driver_log()

    async def session() -> bool:
        try:
            await client.connect()
            current = (await client.read(tag))[tag]
            question = (
                f"{tag} on PLC {client.address}: {_shown(spec, current)} -> "
                f"{_shown(spec, new)}. Write?"
            )
            if not yes and not typer.confirm(question, err=True):
                return False
            await client.write(tag, new)
            return True
        finally:
            await client.close()

    try:
        written = asyncio.run(session())
    except PlcError as exc:
        raise _fail(str(exc), 1) from None
    if not written:
        raise _fail("not written", 1)
    err.print(f"{tag} = {_shown(spec, new)} written", highlight=False)


@app.command("tags")
def tags(ctx: typer.Context) -> None:
    """List the tag map with Modbus addresses and the matching mbpoll reference numbers."""
    tag_map = plc_tag_map(ctx_of(ctx).config_dir)
    width = max(len(n) for n in tag_map.tags)
    out.print(f"{'tag':<{width}}  {'table':<16} {'addr':>5} {'mbpoll -r':>9}  type      unit")
    for name, t in tag_map.tags.items():
        out.print(
            f"{name:<{width}}  {t.table:<16} {t.address:>5} {t.address + 1:>9}  "
            f"{t.type:<8}  {t.unit}",
            highlight=False,
        )


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="plc")
