"""What the UI changes in the mesh: regions added and removed, links added, removed,
taken down and brought back up, queues purged. Each returns the one line the UI shows on success
and raises PlexusError (shown as one line too) otherwise.

On a local cluster, regions and links change through `plexus.local.membership`
(as `plexus region add` and friends do), in a worker thread since those block;
through a node, the same replicated changes go over the admin API.
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING

from plexus.errors import InvalidArgument, PlexusError
from plexus.local.state import LocalClusterError
from plexus.tui.sources import LiveSource

if TYPE_CHECKING:
    from plexus.client import Client

__all__ = ["Actions", "parse_region_name"]

# The same shape of name the cluster file takes for a region.
_REGION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")


def parse_region_name(text: str) -> str:
    name = text.strip()
    if not _REGION_NAME.fullmatch(name):
        raise InvalidArgument(
            f"invalid region name {text!r}: letters, digits, '-' and '_', at most 32"
        )
    return name


class Actions:
    def __init__(self, source: LiveSource) -> None:
        self.source = source

    async def add_region(self, name: str, links: list[str]) -> str:
        state = self.source.state
        if state is None:
            raise LocalClusterError(
                "adding a region starts a node: only on a local cluster (plexus top --state-dir)"
            )
        from plexus.local import membership

        region, seconds = await asyncio.to_thread(membership.add_region, state, name, links)
        linked = f", linked to {', '.join(links)}" if links else ""
        return f"region {name} joined on {region.grpc}{linked} in {seconds:.1f} s"

    async def remove_region(self, name: str) -> str:
        state = self.source.state
        if state is not None:
            from plexus.local import membership

            await asyncio.to_thread(membership.remove_region, state, name)
        else:
            via = await self._any_client(but=name)
            await via.remove_region(name)
        return f"region {name} removed"

    async def add_link(self, a: str, b: str) -> str:
        if a == b:
            raise InvalidArgument(f"a link joins two regions, not {a} to itself")
        state = self.source.state
        if state is not None:
            from plexus.local import membership

            await asyncio.to_thread(membership.add_link, state, a, b)
        else:
            await (await self._any_client()).add_link(a, b)
        return f"link {a}-{b} added"

    async def remove_link(self, a: str, b: str) -> str:
        state = self.source.state
        if state is not None:
            from plexus.local import membership

            await asyncio.to_thread(membership.remove_link, state, a, b)
        else:
            await (await self._any_client()).remove_link(a, b)
        return f"link {a}-{b} removed"

    async def link_down(self, a: str, b: str) -> str:
        """Take the link down and hold it down at `a` (`plexus link down b` at a)."""
        await (await self.source.client(a)).set_link(b, up=False)
        return f"link {a}-{b} taken down (held down at {a}); u brings it back"

    async def link_up(self, a: str, b: str) -> str:
        """Release the link at both ends, whichever of them holds it down."""
        results = await asyncio.gather(
            self._release(a, b), self._release(b, a), return_exceptions=True
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        if len(errors) == len(results):
            raise errors[0]
        return f"link {a}-{b} released; it comes up once both ends connect"

    async def purge_queue(self, region: str, queue: str) -> str:
        """Drop the events queued in `queue` at `region` and not yet delivered."""
        purged = await (await self.source.client(region)).purge_queue(queue)
        return f"queue {queue} at {region} purged: {purged:,} events dropped"

    async def _release(self, here: str, peer: str) -> None:
        await (await self.source.client(here)).set_link(peer, up=True)

    async def _any_client(self, but: str = "") -> Client:
        """A client of some region that answers (membership changes go to any member)."""
        mesh = await self.source.mesh()
        last: PlexusError | None = None
        for region in mesh.regions:
            if region.name != but and region.up:
                try:
                    return await self.source.client(region.name)
                except PlexusError as exc:
                    last = exc
        raise last or LocalClusterError("no region of the mesh answers")
