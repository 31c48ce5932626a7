/* http_response.c - status lines and response heads. */
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
    case 304: return "Not Modified";
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
