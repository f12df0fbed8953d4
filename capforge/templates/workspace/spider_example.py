#!/usr/bin/env python3
"""An example crawler: fetch a captcha, post it to app.py, use the answer.

It needs only `requests`. Start the server first (python app.py --demo-captcha), then:

    python spider_example.py                     # 5 captchas from the server's demo route
    python spider_example.py --captcha-url https://site.example/captcha.jpg --model mysite

The answer is what the site wants done: text to type (with ANSWER = 'arithmetic', the result of
the expression the model read: `result`, beside `reading`), a distance to drag the slider
(SLIDER: `x`, or `display_x` when --display-width gives the width the page shows the background
at; with --piece-url, or from the demo route, the piece is sent too and the gap is matched to
the pixel), an angle to turn the picture (ROTATE: `angle`, in `direction`), or where to click
(click and grid captchas: `clicks`, for the --prompt the page asks for; GRID: the `tiles` too).

When the answer is not `accepted` (confidence below MIN_CONFIDENCE) the crawler fetches a
fresh captcha instead of submitting a likely wrong answer.

Once the site says whether an answer was right (the login worked, or "wrong captcha"), report it:
POST /api/v1/report with the answer's request_id and "right" or "wrong". Right answers become
training images with no person involved; wrong ones go first in the review queue (the server
keeps answers for reports when its settings set OUTCOME_WINDOW or CAPTURE). The demo route knows
the truth, so against it every answer is reported.
"""

import argparse
import base64
import sys
from urllib.parse import urljoin

import requests


def action(body: dict) -> str:
    """What to do on the site with an answer: click, turn, drag or type."""
    if body.get("clicks"):
        where = ", ".join(f"({c['x']:.0f}, {c['y']:.0f})" for c in body["clicks"])
        return f"click {where}" + (f" (tiles {body['tiles']})" if body.get("tiles") is not None else "")
    if "angle" in body:
        return f"turn {body['angle']:.1f} degrees {body['direction']}"
    if "x" in body:  # the piece's image moves to the gap: less its transparent margin, when it was sent
        scale = body["display_x"] / body["x"] if body.get("display_x") and body["x"] else 1.0
        return f"drag {(body['x'] - body.get('match', {}).get('piece_left', 0.0)) * scale:.0f} px"
    if "reading" in body:  # an answer rule's result: type the sum, not the expression
        return f"type {body['result']!r} (read {body['reading']!r})"
    return f"type {body['result']!r}"


def is_right(body: dict, truth: str) -> bool:
    """Whether an answer matches the demo route's truth: within 10 degrees, 5 pixels, or exactly."""
    if "angle" in body:
        turn = abs(body["angle"] - float(truth)) % 360
        return min(turn, 360 - turn) <= 10
    if "x" in body:
        return abs(body["x"] - float(truth)) <= 5
    return truth == body.get("reading", body["result"])  # the demo's truth is what the captcha shows


def solve(session: requests.Session, api: str, captcha_url: str, model: str, attempts: int,
          display_width: float | None = None, prompt: str | None = None, piece_url: str | None = None) -> str:
    """Fetch captchas until the server accepts its own answer; return what to do with it."""
    for attempt in range(1, attempts + 1):
        captcha = session.get(captcha_url, timeout=10)
        captcha.raise_for_status()
        payload = {"image": base64.b64encode(captcha.content).decode()}
        if model:
            payload["model"] = model
        if display_width:
            payload["display_width"] = display_width
        if prompt:
            payload["prompt"] = prompt
        piece_at = piece_url or captcha.headers.get("X-Captcha-Piece")  # the demo route says where its piece is
        if piece_at:  # a slider's piece, fetched in the same session as its background
            piece = session.get(urljoin(captcha_url, piece_at), timeout=10)
            piece.raise_for_status()
            payload["piece"] = base64.b64encode(piece.content).decode()
        answer = session.post(f"{api}/api/v1/recognize", json=payload, timeout=10)
        if answer.status_code != 200:
            raise SystemExit(f"the server refused the captcha: {answer.status_code} {answer.text}")
        body = answer.json()
        truth = captcha.headers.get("X-Captcha-Label")  # only the demo route tells the truth
        right = truth is not None and is_right(body, truth)
        check = "" if truth is None else ("  correct" if right else f"  wrong (was {truth})")
        print(f"attempt {attempt}: {action(body)} confidence {body['confidence']:.3f} "
              f"in {body['time_ms']:.1f} ms{'' if body['accepted'] else '  not accepted: fetching another'}{check}")
        if truth is not None:  # a real crawler reports once the site has answered its submission
            report(session, api, body, right, model)
        if body["accepted"]:
            return action(body)
    raise SystemExit(f"no answer was accepted in {attempts} attempts")


def report(session: requests.Session, api: str, answer: dict, right: bool, model: str) -> None:
    """Tell the server what the site said about ``answer``."""
    payload = {"request_id": answer["request_id"], "outcome": "right" if right else "wrong"}
    if model:
        payload["model"] = model
    reply = session.post(f"{api}/api/v1/report", json=payload, timeout=10)
    if reply.status_code == 200:
        print(f"  reported {payload['outcome']}: kept as {reply.json()['stored']}")
    else:  # reports off, or the answer no longer kept: the crawl goes on
        print(f"  report not kept: {reply.json()['error']['message']}")


def main() -> None:
    parser = argparse.ArgumentParser(description="Example crawler for a capforge server.")
    parser.add_argument("--url", default="http://127.0.0.1:7860", help="where app.py listens")
    parser.add_argument("--captcha-url", help="the site's captcha image (default: the server's demo route)")
    parser.add_argument("--model", default="", help="model name, when the server has several")
    parser.add_argument("--count", type=int, default=5, help="captchas to solve")
    parser.add_argument("--attempts", type=int, default=5, help="fresh captchas to try per answer")
    parser.add_argument("--display-width", type=float, help="SLIDER: the width the page shows the background at")
    parser.add_argument("--piece-url", help="SLIDER: the site's piece image, matched against the background")
    parser.add_argument("--prompt", help="click and grid captchas: what the page asks to click (e.g. 'lion')")
    args = parser.parse_args()
    captcha_url = args.captcha_url or f"{args.url}/demo/captcha" + (f"?model={args.model}" if args.model else "")
    with requests.Session() as session:
        try:
            for _ in range(args.count):
                print("solved:", solve(session, args.url, captcha_url, args.model, args.attempts, args.display_width,
                                       args.prompt, args.piece_url))
        except requests.ConnectionError:
            sys.exit(f"cannot reach {args.url}; start the server with: python app.py --demo-captcha")


if __name__ == "__main__":
    main()
