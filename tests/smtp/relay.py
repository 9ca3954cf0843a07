#!/usr/bin/python3
"""A real SMTP relay for fulcrum's alert tests, built on aiosmtpd (Debian's
python3-aiosmtpd; scripts/install-test-deps.sh installs it).

It answers like Amazon SES where the tests need it: a scripted sequence of
replies to the end of DATA (for example `454 Throttling failure: Maximum sending
rate exceeded` once, then 250), STARTTLS or implicit TLS with a given
certificate, and AUTH with one user. Every message it accepts is saved as
DIR/msg-NNNN.json (envelope, authenticated user, TLS, headers, decoded body,
time of arrival); every DATA it answers, accepted or not, is appended to
DIR/attempts.jsonl. Prints READY on stdout once it listens.

usage: relay.py --port N --dir DIR [--mode plain|starttls|implicit]
                [--tls-cert PEM --tls-key PEM] [--auth USER:PASS]
                [--replies "454 Throttling failure: ...;554 ..."]
"""

import argparse
import asyncio
import email
import email.policy
import json
import os
import ssl
import sys
import time

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class Handler:
    def __init__(self, out_dir, replies):
        self.out_dir = out_dir
        self.replies = list(replies)
        self.seq = 0

    def _record(self, name, obj):
        tmp = os.path.join(self.out_dir, ".tmp-" + name)
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1)
        os.replace(tmp, os.path.join(self.out_dir, name))

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode()
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        alert_id = msg.get("X-Fulcrum-Alert-Id")
        reply = self.replies.pop(0) if self.replies else "250"
        code = int(reply[:3])
        if reply == "250":
            reply = "250 Ok 0100018c-test-%06d" % (self.seq + 1)
        with open(os.path.join(self.out_dir, "attempts.jsonl"), "a") as f:
            f.write(json.dumps({"time": time.time(), "code": code,
                                "alert_id": alert_id}) + "\n")
        if code != 250:
            return reply
        self.seq += 1
        body = msg.get_body(preferencelist=("plain",))
        tls = session.ssl is not None or \
            server.transport.get_extra_info("ssl_object") is not None
        auth = session.auth_data if isinstance(session.auth_data, str) else None
        self._record("msg-%04d.json" % self.seq, {
            "seq": self.seq,
            "received": time.time(),
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "auth_user": auth,
            "tls": tls,
            "subject": str(msg.get("Subject", "")),
            "alert_id": alert_id,
            "headers": [[k, str(v)] for k, v in msg.items()],
            "body": body.get_content() if body is not None else "",
        })
        return reply


def authenticator_for(user, password):
    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and \
            auth_data.login.decode() == user and \
            auth_data.password.decode() == password
        if ok:
            return AuthResult(success=True, auth_data=user)
        return AuthResult(success=False, handled=False)
    return authenticate


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--mode", choices=["plain", "starttls", "implicit"], default="plain")
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--auth")
    p.add_argument("--replies", default="")
    a = p.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    replies = [r.strip() for r in a.replies.split(";") if r.strip()]
    handler = Handler(a.dir, replies)

    ctx = None
    if a.mode != "plain":
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(a.tls_cert, a.tls_key)
    kwargs = {"hostname": "relay.test", "ident": "SimpleEmailService-test"}
    if a.mode == "starttls":
        kwargs.update(tls_context=ctx, require_starttls=True)
    if a.auth:
        user, _, password = a.auth.partition(":")
        # aiosmtpd only knows STARTTLS as TLS: with implicit TLS the socket is
        # encrypted from the start, so AUTH may be offered at once.
        kwargs.update(authenticator=authenticator_for(user, password),
                      auth_required=True, auth_require_tls=a.mode != "implicit")

    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, loop=loop, **kwargs),
        host="127.0.0.1",
        port=a.port,
        ssl=ctx if a.mode == "implicit" else None,
    )
    print("READY", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
