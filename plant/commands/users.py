"""`plant users`: HMI logins (add, list, passwd, role, disable/enable)."""

from __future__ import annotations

from typing import Annotated

import typer

from plant.commands import ctx_of, err, out
from plant.store import Store
from plant.users import (
    UserError,
    add_user,
    check_new_user,
    list_users,
    load_users_config,
    set_active,
    set_password,
    set_role,
    use_hash_cost,
)

app = typer.Typer(help="Manage HMI users and their roles.", no_args_is_help=True)
RoleOpt = Annotated[str, typer.Option("--role", help="viewer, operator, engineer or admin.")]


def _store(ctx: typer.Context) -> Store:
    c = ctx_of(ctx)
    auth = load_users_config(c.config_dir).auth
    use_hash_cost(auth.argon2_time_cost, auth.argon2_memory_kib)
    return c.store()


def _ask_password() -> str:
    return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))


def _fail(exc: UserError) -> typer.Exit:
    err.print(f"[bold red]error:[/] {exc}", highlight=False)
    return typer.Exit(2)


@app.command("add")
def add(
    ctx: typer.Context, name: Annotated[str, typer.Argument(help="Login name.")], role: RoleOpt
) -> None:
    """Create a user; asks for the password twice (at least 10 characters)."""
    try:
        check_new_user(name, role)
    except UserError as exc:
        raise _fail(exc) from None
    store = _store(ctx)
    try:
        add_user(store, name, role, _ask_password())
    except UserError as exc:
        raise _fail(exc) from None
    finally:
        store.close()
    out.print(f"user {name} created with role {role}")


@app.command("list")
def list_(ctx: typer.Context) -> None:
    """Show every user with role and whether the login is enabled."""
    store = _store(ctx)
    try:
        for u in list_users(store):
            out.print(f"{u.name:24} {u.role.value:9} {'enabled' if u.active else 'disabled'}")
    finally:
        store.close()


@app.command("passwd")
def passwd(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Login name.")]) -> None:
    """Set a new password for a user (asks twice)."""
    store = _store(ctx)
    try:
        set_password(store, name, _ask_password())
    except UserError as exc:
        raise _fail(exc) from None
    finally:
        store.close()
    out.print(f"password of {name} changed")


@app.command("role")
def role(
    ctx: typer.Context, name: Annotated[str, typer.Argument(help="Login name.")], role: RoleOpt
) -> None:
    """Change a user's role (audited)."""
    store = _store(ctx)
    try:
        set_role(store, name, role, by="cli")
    except UserError as exc:
        raise _fail(exc) from None
    finally:
        store.close()
    out.print(f"{name} is now {role}")


@app.command("disable")
def disable(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Login name.")]) -> None:
    """Stop a user from logging in, keeping their audit history."""
    _set_active(ctx, name, False)


@app.command("enable")
def enable(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Login name.")]) -> None:
    """Allow a disabled user to log in again."""
    _set_active(ctx, name, True)


def _set_active(ctx: typer.Context, name: str, active: bool) -> None:
    store = _store(ctx)
    try:
        set_active(store, name, active, by="cli")
    except UserError as exc:
        raise _fail(exc) from None
    finally:
        store.close()
    out.print(f"{name} {'enabled' if active else 'disabled'}")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="users")
