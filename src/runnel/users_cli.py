"""``runnel users add|list|disable|enable|set-password``: account administration from the
shell, on the configured store, for headless set-up and lost admin passwords. It works
while the server runs (sessions and keys are looked up in the store on every request, so
a disabled account stops working at once); replies that account is streaming finish
unless it is disabled through the API, which stops them."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Awaitable, Callable

from runnel.accounts.service import AccountService
from runnel.errors import InvalidRequest, RunnelError
from runnel.settings import Settings
from runnel.store.sql import Store


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    users = commands.add_parser("users", help="manage accounts")
    actions = users.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="create an account")
    add.add_argument("name")
    add.add_argument("--admin", action="store_true", help="make it an administrator")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    actions.add_parser("list", help="list the accounts")
    for action in ("disable", "enable"):
        actions.add_parser(action, help=f"{action} an account").add_argument("name")
    change = actions.add_parser("set-password", help="set an account's password")
    change.add_argument("name")
    change.add_argument("--password-stdin", action="store_true", help="read it from stdin")


def run(args: argparse.Namespace, settings: Settings) -> int:
    commands: dict[str, Callable[[AccountService, argparse.Namespace], Awaitable[str]]] = {
        "add": _add,
        "list": _list,
        "disable": _disable,
        "enable": _enable,
        "set-password": _set_password,
    }
    try:
        print(asyncio.run(_with_accounts(settings, args, commands[args.action])))
    except RunnelError as exc:
        print(f"runnel: {exc.message}", file=sys.stderr)
        return 1
    except (EOFError, KeyboardInterrupt):
        print("runnel: no password given", file=sys.stderr)
        return 1
    return 0


async def has_admin(settings: Settings) -> bool:
    """Whether the store holds an enabled administrator (which lets the server listen off
    loopback without ``RUNNEL_API_TOKENS``)."""
    store = Store(settings.database, pool_size=1)
    await store.open()
    try:
        return bool(await AccountService(settings, store).store.active_admins())
    finally:
        await store.close()


async def _with_accounts(
    settings: Settings,
    args: argparse.Namespace,
    command: Callable[[AccountService, argparse.Namespace], Awaitable[str]],
) -> str:
    store = Store(settings.database, pool_size=1)
    await store.open()
    try:
        return await command(AccountService(settings, store), args)
    finally:
        await store.close()


async def _add(accounts: AccountService, args: argparse.Namespace) -> str:
    password = _password(args.password_stdin)
    user = await accounts.add_user(args.name, password, "admin" if args.admin else "user")
    return f"created {user.role} {user.username} ({user.id})"


async def _list(accounts: AccountService, _: argparse.Namespace) -> str:
    rows = ["username\trole\tstatus\tid"]
    for user in await accounts.list_users():
        status = "pending" if user.pending else "disabled" if user.disabled else "active"
        rows.append(f"{user.username}\t{user.role}\t{status}\t{user.id}")
    return "\n".join(rows)


async def _disable(accounts: AccountService, args: argparse.Namespace) -> str:
    user = await accounts.user_named(args.name)
    await accounts.change_user(None, user.id, {"disabled": True})
    return f"disabled {user.username}: its sessions and API keys are revoked"


async def _enable(accounts: AccountService, args: argparse.Namespace) -> str:
    user = await accounts.user_named(args.name)
    await accounts.change_user(None, user.id, {"disabled": False})
    return f"enabled {user.username}"


async def _set_password(accounts: AccountService, args: argparse.Namespace) -> str:
    user = await accounts.user_named(args.name)
    await accounts.change_user(None, user.id, {"password": _password(args.password_stdin)})
    return f"set the password of {user.username}; its sessions are signed out"


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise InvalidRequest("the passwords differ")
    return first
