"""The route table answers 404, 405 and Allow by itself."""

from __future__ import annotations

from email.message import Message

from budget_exporter.web.routes import Request, Response, Routes, text


def request(method: str, path: str) -> Request:
    return Request(method, path, Message())


def hello(req: Request) -> Response:
    return text(200, f"hello from {req.path}")


def test_a_get_route_answers_get_and_head_and_405_for_the_rest() -> None:
    routes = Routes()
    routes.add("/metrics", {"GET": hello})
    for method in ("GET", "HEAD"):
        route = routes.resolve(method, "/metrics")
        assert route.handler(request(method, "/metrics")).status == 200
        assert not route.reads_body
    refused = routes.resolve("DELETE", "/metrics").handler(request("DELETE", "/metrics"))
    assert refused.status == 405 and refused.headers == {"Allow": "GET, HEAD"}


def test_body_methods_read_the_body_and_unknown_paths_are_404() -> None:
    routes = Routes()
    routes.add("/-/reload", {"POST": hello, "PUT": hello})
    assert routes.resolve("POST", "/-/reload").reads_body
    assert routes.allowed("/-/reload") == ["POST", "PUT"]
    get = routes.resolve("GET", "/-/reload")
    assert get.handler(request("GET", "/-/reload")).headers == {"Allow": "POST, PUT"}
    assert not get.reads_body  # a refused request's body is never read
    assert routes.resolve("GET", "/nope").handler(request("GET", "/nope")).status == 404


def test_a_prefix_takes_every_method_below_it() -> None:
    routes = Routes()
    routes.add_prefix("/api/v1/", hello)
    answer = routes.resolve("PATCH", "/api/v1/check")
    assert answer.reads_body and answer.handler(request("PATCH", "/api/v1/check")).status == 200
    assert routes.resolve("GET", "/api/v2/x").handler(request("GET", "/api/v2/x")).status == 404
