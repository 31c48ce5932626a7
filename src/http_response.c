/* http_response.c - status lines, response heads and the demo page. */
#include "http_response.h"

#include <stdio.h>

const char *http_status_text(int status)
{
    switch (status) {
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

size_t http_response_write_head(char *out, size_t cap,
                                const struct http_response_head *h)
{
    int n = snprintf(out, cap,
                     "HTTP/1.1 %d %s\r\n"
                     "Server: ringws\r\n"
                     "%s%s%s"
                     "Content-Length: %zu\r\n"
                     "%s%s\r\n",
                     h->status, http_status_text(h->status),
                     h->content_type ? "Content-Type: " : "",
                     h->content_type ? h->content_type : "",
                     h->content_type ? "\r\n" : "", h->content_length,
                     h->close ? "Connection: close\r\n" : "",
                     h->extra ? h->extra : "");
    if (n < 0 || (size_t)n >= cap)
        return 0;
    return (size_t)n;
}

const char http_demo_page[] =
    "<!doctype html>\n"
    "<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
    "<title>ringws echo</title>\n"
    "<style>body{font:16px system-ui,sans-serif;max-width:42em;margin:2em auto}"
    "#log{border:1px solid #ccc;height:18em;overflow:auto;padding:.5em;"
    "white-space:pre-wrap}input{width:70%}</style></head>\n"
    "<body><h1>ringws</h1>\n"
    "<p>This page opens a WebSocket to <code>/echo</code>; the server sends "
    "back every message.</p>\n"
    "<p>Status: <b id=\"status\">connecting</b></p>\n"
    "<form id=\"form\"><input id=\"msg\" autocomplete=\"off\" "
    "value=\"hello, ringws\"> <button>Send</button></form>\n"
    "<div id=\"log\"></div>\n"
    "<script>\n"
    "const log = document.getElementById('log');\n"
    "const status = document.getElementById('status');\n"
    "function line(t) { log.textContent += t + '\\n'; log.scrollTop = log.scrollHeight; }\n"
    "const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/echo';\n"
    "const ws = new WebSocket(url);\n"
    "/* Self-test hook: /?send=TEXT sends TEXT on open and puts its echo in the title. */\n"
    "const selftest = new URLSearchParams(location.search).get('send');\n"
    "ws.onopen = () => {\n"
    "  status.textContent = 'open'; line('connected to ' + url);\n"
    "  if (selftest !== null) { ws.send(selftest); line('> ' + selftest); }\n"
    "};\n"
    "ws.onmessage = (e) => {\n"
    "  line('< ' + e.data);\n"
    "  if (selftest !== null) document.title = 'echo:' + e.data;\n"
    "};\n"
    "ws.onclose = (e) => { status.textContent = 'closed (' + e.code + ')'; };\n"
    "ws.onerror = () => line('error');\n"
    "document.getElementById('form').onsubmit = (e) => {\n"
    "  e.preventDefault();\n"
    "  const m = document.getElementById('msg').value;\n"
    "  if (ws.readyState === WebSocket.OPEN) { ws.send(m); line('> ' + m); }\n"
    "};\n"
    "</script></body></html>\n";

const size_t http_demo_page_len = sizeof(http_demo_page) - 1;
