"""An asynchronous socket policy that takes its time (0.2 s), as one asking a database would:
the tests check that the server's limits hold while it thinks."""

import asyncio


async def has_socket_pass(handler) -> bool:
    await asyncio.sleep(0.2)
    return True
