"""Netron's web app served from the installed `netron` package, offline and with the workbench's focus.

netron's own server (`netron.start`) serves the page as published, which offline means: a blocking
cookie-consent modal until a `consent` cookie exists (ipinfo.io is asked first), Google Analytics from the
user's browser, and a refusal to run 180 days after the release date. This server serves the same files
and changes only the page around them:
- the version is given as 0.0.0, for which Netron starts no telemetry (`packaged` is false);
- the Content-Security-Policy gets `connect-src 'self'`, so the page cannot reach outside at all;
- a same-origin script (the page's CSP allows only 'self') gives the page its own cookie jar that
  already holds `consent`: an iframe on another port may be denied cookies, and the question is moot
  with telemetry off;
- the release date is the serving date, since an offline install cannot update;
- a stylesheet outlines the root cause and the focused node (Netron gives them DOM ids
  `node-name-<name>`), colours each node's header by its role in the diagnosis and outlines what a fix
  changed; the script selects and scrolls to the focused node once drawn, and adds a legend whose
  checkbox turns the colours off (a class on <body> the stylesheet's role rules depend on).
"""

from __future__ import annotations

import hashlib
import html
import http.server
import json
import logging
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from workbench.ui.netron_page import PAGE_SCRIPT
from workbench.ui.roles import CLEAN, COLOURS, LABELS

log = logging.getLogger(__name__)

_ASSET_TYPES = {
    ".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".png": "image/png",
    ".ico": "image/x-icon", ".json": "application/json", ".svg": "image/svg+xml",
}


class NetronUnavailable(RuntimeError):
    """Netron cannot be served here; the message says why, for the panel to show."""


@dataclass(frozen=True)
class Page:
    """One model as Netron shows it: its bytes, the nodes to outline as roots, the node to select,
    each node's role (workbench.ui.roles) to colour it by, and the nodes a fix changed."""

    filename: str
    data: bytes
    roots: tuple[str, ...] = ()
    focus: str | None = None
    roles: tuple[tuple[str, str], ...] = ()  # (node name, role)
    changed: tuple[str, ...] = ()


class NetronServer:
    """A local HTTP server (loopback only) showing any number of models, each at /m/<token>/."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.assets = _netron_assets()
        self.pages: dict[str, Page] = {}
        handler = type("Handler", (_Handler,), {"site": self})
        try:
            self.httpd = http.server.ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise NetronUnavailable(f"cannot open a local port for Netron on {host}: {exc}") from None
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="workbench-netron", daemon=True)
        self.thread.start()

    @property
    def address(self) -> tuple[str, int]:
        return self.httpd.server_address[:2]

    def base_url(self) -> str:
        host, port = self.address
        return f"http://{host}:{port}"

    def publish(self, page: Page) -> str:
        """Serve `page`; returns its path (same content, same path)."""
        digest = hashlib.sha1(page.data)
        digest.update(repr((page.filename, page.roots, page.focus, page.roles, page.changed)).encode())
        token = digest.hexdigest()[:16]
        self.pages[token] = page
        return f"/m/{token}/"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


_shared: NetronServer | None = None
_shared_lock = threading.Lock()


def shared_server() -> NetronServer:
    """The kernel's one Netron server, started on first use."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = NetronServer()
        return _shared


def _netron_assets() -> Path:
    try:
        import netron
    except ImportError:
        raise NetronUnavailable("netron is not installed; `pip install netron` (the `lab` extra) to see the graph.") from None
    folder = Path(netron.__file__).parent
    if not (folder / "index.html").is_file():
        raise NetronUnavailable(f"netron {getattr(netron, '__version__', '?')} has no web app in {folder}.")
    return folder


class _Handler(http.server.BaseHTTPRequestHandler):
    site: NetronServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        parts = urllib.parse.urlparse(self.path).path.split("/", 3)  # "", "m", token, rest
        page = self.site.pages.get(parts[2]) if len(parts) == 4 and parts[1] == "m" else None
        if page is None:
            return self._send(404, "text/plain", b"unknown page")
        rest = urllib.parse.unquote(parts[3]) or "index.html"
        if rest == "index.html":
            return self._send(200, "text/html", index_html(self.site.assets, page).encode())
        if rest == f"data/{page.filename}":
            return self._send(200, "application/octet-stream", page.data)
        if rest == "workbench.css":
            return self._send(200, "text/css", highlight_css(page).encode())
        if rest == "workbench.js":
            return self._send(200, "text/javascript", PAGE_SCRIPT.encode())
        self._send_asset(rest)

    def _send_asset(self, relative: str) -> None:
        base = self.site.assets.resolve()
        path = (base / relative).resolve()
        if path.parent != base or path.suffix not in _ASSET_TYPES or not path.is_file():
            return self._send(404, "text/plain", b"not found")
        self._send(200, _ASSET_TYPES[path.suffix], path.read_bytes())

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args) -> None:  # noqa: A002 (http.server's signature)
        log.debug("netron: " + format, *args)


def index_html(assets: Path, page: Page) -> str:
    text = (assets / "index.html").read_text(encoding="utf-8")
    meta = "\n".join([
        '<meta name="type" content="Python">',
        '<meta name="version" content="0.0.0">',  # not "packaged": Netron starts no telemetry
        f'<meta name="file" content="data/{html.escape(page.filename)}">',
        f'<meta name="identifier" content="{html.escape(page.filename)}">',
        f'<meta name="workbench-focus" content="{html.escape(page.focus or "")}">',
        f'<meta name="workbench-legend" content="{html.escape(legend_json(page))}">',
    ])
    text = _replace_once(text, r'<meta name="version" content="[^"]*">', meta)
    text = _replace_once(text, r'<meta name="date" content="[^"]*">',
                         f'<meta name="date" content="{time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}">')
    text = _replace_once(text, r"script-src 'self';", "script-src 'self'; connect-src 'self';")
    return _replace_once(text, r'<script type="text/javascript" src="index.js"></script>',
                         '<link rel="stylesheet" type="text/css" href="workbench.css">\n'
                         '<script type="text/javascript" src="workbench.js"></script>\n'
                         '<script type="text/javascript" src="index.js"></script>')


CHANGED_COLOUR = "#1a7f37"


def highlight_css(page: Page) -> str:
    rules = [f'[id="node-name-{_css_string(name)}"] > .node.node-border '
             "{ stroke: #cf222e; stroke-width: 5px; }" for name in page.roots]
    if page.focus and page.focus not in page.roots:
        rules.append(f'[id="node-name-{_css_string(page.focus)}"] > .node.node-border '
                     "{ stroke: #0969da; stroke-width: 4px; }")
    rules += [f'[id="node-name-{_css_string(name)}"] > .node.node-border '
              f"{{ stroke: {CHANGED_COLOUR}; stroke-width: 5px; stroke-dasharray: 6 3; }}" for name in page.changed]
    # Role colours paint the node's header (its op type); body.wb-plain (the legend's checkbox) turns them off.
    rules += [f'body:not(.wb-plain) [id="node-name-{_css_string(name)}"] .node-item-type path '
              f"{{ fill: {COLOURS[role]}; }}" for name, role in page.roles if role != CLEAN]
    return "\n".join(rules) + "\n"


def legend_json(page: Page) -> str:
    """The legend's entries for the roles and marks present on the page, as JSON [[colour, label, count]]."""
    counts: dict[str, int] = {}
    for _, role in page.roles:
        counts[role] = counts.get(role, 0) + 1
    entries = [[COLOURS[role], LABELS[role].split(" (")[0], counts[role]]
               for role in COLOURS if role != CLEAN and role in counts]
    if page.changed:
        entries.append([CHANGED_COLOUR, "changed by the fix (outline)", len(page.changed)])
    return json.dumps(entries)


def _css_string(text: str) -> str:
    """Escape for a double-quoted CSS string: anything not plainly safe as a hex escape."""
    return "".join(c if c.isalnum() or c in "_-./:" else f"\\{ord(c):x} " for c in text)


def _replace_once(text: str, pattern: str, replacement: str) -> str:
    new, count = re.subn(pattern, lambda _: replacement, text, count=1)
    if count != 1:
        # A Netron release that changed its page: serve it anyway, but the behaviour above may be lost.
        log.warning("Netron's index.html has no %r; this netron version may show its consent dialog", pattern)
    return new
