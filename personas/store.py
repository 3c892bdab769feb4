"""Personas in the database: synced from files on start, looked up by name or id."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from bot import replies
from bot.errors import UserFacingError
from bot.names import closest
from bot.storage.models import Persona
from personas.spec import PersonaSpec, discover


async def sync(session: AsyncSession, config_dir: Path) -> tuple[list[str], list[str]]:
    """Upsert every persona file; returns (names loaded, problems found)."""
    found, problems = discover(config_dir)
    for spec, path in found.values():
        await upsert(session, spec, source=str(path))
    return sorted(found), problems


async def upsert(session: AsyncSession, spec: PersonaSpec, *, source: str) -> None:
    values = spec.model_dump() | {"source": source}
    statement = insert(Persona).values(**values)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["name"],
            set_={**{k: statement.excluded[k] for k in values}, "updated_at": func.now()},
        )
    )


async def names(session: AsyncSession) -> list[str]:
    return list((await session.scalars(select(Persona.name).order_by(Persona.name))).all())


async def by_name(session: AsyncSession, name: str) -> Persona:
    """The persona called ``name``; a UserFacingError naming the closest one otherwise."""
    persona = await session.scalar(select(Persona).where(Persona.name == name.lower()))
    if persona is None:
        known = await names(session)
        raise UserFacingError(
            replies.unknown_persona(name, known, closest(name.lower(), known, cutoff=0.5))
        )
    return persona
