"""Layer 2, I/O adapters: the asyncio WebSocket driver (`ws_driver`) and the Twirp RoomService client (`twirp`)."""
