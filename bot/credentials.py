"""Credentials, stored encrypted (Fernet: AES-128-CBC with an HMAC) with the installation key.

The key comes from SWITCHBOARD_SECRET_KEY, or from `secret.key` in the Switchboard home,
made (readable by its owner only) the first time a secret is stored. Back the key up with
the database: without it the stored secrets cannot be read.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import Settings
from bot.errors import ServiceError, UserFacingError
from bot.storage.models import Secret

KEY_FILE = "secret.key"


def box(settings: Settings) -> Fernet:
    """The cipher for this installation's secrets."""
    if settings.secret_key:
        return _fernet(settings.secret_key.get_secret_value(), "SWITCHBOARD_SECRET_KEY")
    path = settings.home / KEY_FILE
    if not path.exists():
        _write_key(path)
    return _fernet(path.read_text().strip(), str(path))


def _write_key(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(Fernet.generate_key().decode())


def _fernet(key: str, where: str) -> Fernet:
    try:
        return Fernet(key.encode())
    except ValueError as exc:
        raise ServiceError(f"The secret key in {where} is not a valid key.") from exc


async def store(
    session: AsyncSession, cipher: Fernet, name: str, value: str, scope: str = "global"
) -> None:
    token = cipher.encrypt(value.encode()).decode()
    statement = insert(Secret).values(scope=scope, name=name, ciphertext=token)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["scope", "name"],
            set_={"ciphertext": statement.excluded.ciphertext, "updated_at": func.now()},
        )
    )


async def reveal(session: AsyncSession, cipher: Fernet, name: str, scope: str = "global") -> str:
    token = await session.scalar(
        select(Secret.ciphertext).where(Secret.scope == scope, Secret.name == name)
    )
    if token is None:
        raise UserFacingError(
            f"There is no secret called '{name}'. Set it with `switchboard secrets set {name}`."
        )
    try:
        return cipher.decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise ServiceError(
            f"The secret '{name}' was stored with another key than this installation's."
        ) from exc


async def names(session: AsyncSession, scope: str = "global") -> list[str]:
    rows = await session.scalars(
        select(Secret.name).where(Secret.scope == scope).order_by(Secret.name)
    )
    return list(rows)


async def remove(session: AsyncSession, name: str, scope: str = "global") -> bool:
    result = await session.execute(
        delete(Secret).where(Secret.scope == scope, Secret.name == name).returning(Secret.id)
    )
    return result.first() is not None
