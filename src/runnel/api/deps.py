"""What handlers receive: the services built in the lifespan, and the current principal."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from runnel.accounts.records import Principal
from runnel.accounts.service import AccountService
from runnel.api.auth import current_admin, current_principal, current_user
from runnel.api.feed import Feeds
from runnel.broker import Broker
from runnel.chat import ChatService
from runnel.followups import Followups
from runnel.generation import GenerationService
from runnel.metrics import Metrics
from runnel.providers.registry import Registry
from runnel.settings import Settings
from runnel.store.sql import Store


@dataclass(slots=True)
class Services:
    settings: Settings
    store: Store
    broker: Broker
    registry: Registry
    generations: GenerationService
    chat: ChatService
    accounts: AccountService
    metrics: Metrics
    feeds: Feeds = field(default_factory=Feeds)
    followups: Followups | None = None


async def services(request: Request) -> Services:
    """``async``, like ``current_principal``: a plain function would run in a worker thread."""
    found: Services = request.app.state.runnel
    return found


ServicesDep = Annotated[Services, Depends(services)]
UserDep = Annotated[str, Depends(current_user)]
PrincipalDep = Annotated[Principal, Depends(current_principal)]
AdminDep = Annotated[Principal, Depends(current_admin)]
