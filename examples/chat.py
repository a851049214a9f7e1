"""A minimal portcullis client: asks one question and prints the agent's events.

pip install websockets
python3 examples/chat.py "what is 12*7?"        # against the embedded default
"""
import asyncio
import json
import sys
import urllib.request
import uuid

import websockets

BASE = "http://localhost:8080"


def dev_token(user_id: str) -> str:
    # POST /api/dev/token exists only in development and test environments.
    req = urllib.request.Request(
        f"{BASE}/api/dev/token",
        data=json.dumps({"user_id": user_id}).encode(),
        headers={"content-type": "application/json"},
    )
    return json.load(urllib.request.urlopen(req))["token"]


async def main(question: str) -> None:
    config = json.load(urllib.request.urlopen(f"{BASE}/api/client-config"))
    token = dev_token("alice")
    async with websockets.connect(
        config["websocket_url"],
        additional_headers={"Authorization": f"Bearer {token}"},
        subprotocols=[config["subprotocol"]],
    ) as ws:
        hello = json.loads(await ws.recv())
        print(hello["type"], hello["user_id"])
        # `id` is the idempotency key: resending the same id gets the same ack, no new run.
        await ws.send(json.dumps({"type": "user_message", "id": str(uuid.uuid4()), "content": question}))
        async for frame in ws:
            event = json.loads(frame)
            shown = event.get("delta") or event.get("text") or event.get("tool") or ""
            print(event.get("seq", "-"), event["type"], shown)
            if event["type"] == "agent_completed":
                print("answer:", event["message"]["content"])
                break


asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "what is 12*7?"))
