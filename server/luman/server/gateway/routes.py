"""The route table, built from the `google.api.http` annotations on each RPC.

Nothing here names a URL: every route comes from an HttpRule in the protos, so the REST surface
cannot drift from the gRPC contract. Path templates follow google/api/http.proto:

    Template = "/" Segments [ Verb ] ;
    Segments = Segment { "/" Segment } ;
    Segment  = "*" | "**" | LITERAL | Variable ;
    Variable = "{" FieldPath [ "=" Segments ] "}" ;
    Verb     = ":" LITERAL ;
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Iterator
from urllib.parse import unquote

from google.api import annotations_pb2, http_pb2
from google.protobuf import message_factory
from google.protobuf.descriptor import (
    Descriptor,
    FieldDescriptor,
    MethodDescriptor,
    ServiceDescriptor,
)
from google.protobuf.message import Message

from luman.api.v1 import annotations_pb2 as api_annotations_pb2
from luman.server import methods

HTTP_METHODS = ("GET", "PUT", "POST", "DELETE", "PATCH")


class RouteError(Exception):
    """An HttpRule in the protos is malformed or names a field that does not exist."""


class PathDecodeError(ValueError):
    """A path variable is not valid percent-encoded UTF-8."""


@dataclasses.dataclass(frozen=True)
class PathVariable:
    """One `{field.path=pattern}` of a template."""

    field_path: tuple[str, ...]
    # A variable spanning several segments keeps its "/" separators (and any %2F stays encoded
    # inside a segment), as grpc-gateway does for `{name=shelves/*/books/*}`.
    multi_segment: bool

    @property
    def name(self) -> str:
        return ".".join(self.field_path)


@dataclasses.dataclass(frozen=True)
class PathTemplate:
    template: str
    openapi_path: str
    regex: re.Pattern[str]
    variables: tuple[PathVariable, ...]

    def match(self, raw_path: str) -> dict[PathVariable, str] | None:
        """Bind the (still percent-encoded) path; None when it does not match.

        Raises:
            PathDecodeError: a bound value is not valid percent-encoded UTF-8.
        """
        found = self.regex.fullmatch(raw_path)
        if found is None:
            return None
        bound: dict[PathVariable, str] = {}
        for index, variable in enumerate(self.variables):
            value = found.group(f"v{index}")
            try:
                if variable.multi_segment:
                    value = "/".join(unquote(p, errors="strict") for p in value.split("/"))
                else:
                    value = unquote(value, errors="strict")
            except UnicodeDecodeError as exc:
                raise PathDecodeError(variable.name) from exc
            bound[variable] = value
        return bound


def parse_template(template: str) -> PathTemplate:
    """Compile a google.api.http path template.

    Raises:
        RouteError: the template does not follow the grammar.
    """
    parser = _TemplateParser(template)
    return parser.parse()


class _TemplateParser:
    def __init__(self, template: str) -> None:
        self._text = template
        self._pos = 0
        self._variables: list[PathVariable] = []
        self._openapi: list[str] = []

    def parse(self) -> PathTemplate:
        if not self._text.startswith("/"):
            raise RouteError(f"path template {self._text!r} must start with '/'")
        self._pos = 1
        regex = "/" + self._segments(in_variable=False)
        openapi = "/" + "/".join(self._openapi)
        if self._peek() == ":":
            self._pos += 1
            verb = self._literal()
            regex += ":" + re.escape(verb)
            openapi += ":" + verb
        if self._pos != len(self._text):
            raise RouteError(f"unexpected {self._text[self._pos :]!r} in {self._text!r}")
        return PathTemplate(self._text, openapi, re.compile(regex), tuple(self._variables))

    def _peek(self) -> str:
        return self._text[self._pos] if self._pos < len(self._text) else ""

    def _segments(self, *, in_variable: bool) -> str:
        parts = [self._segment(in_variable=in_variable)]
        while self._peek() == "/":
            self._pos += 1
            parts.append(self._segment(in_variable=in_variable))
        return "/".join(parts)

    def _segment(self, *, in_variable: bool) -> str:
        if self._peek() == "*":
            # An anonymous wildcard binds no field and has no OpenAPI spelling: refuse it.
            if not in_variable:
                raise RouteError(f"wildcard outside a variable in {self._text!r}")
            if self._text.startswith("**", self._pos):
                self._pos += 2
                return ".+"
            self._pos += 1
            return "[^/]+"
        if self._peek() == "{":
            if in_variable:
                raise RouteError(f"nested variable in {self._text!r}")
            return self._variable()
        literal = self._literal()
        if not in_variable:
            self._openapi.append(literal)
        return re.escape(literal)

    def _literal(self) -> str:
        found = re.compile(r"[A-Za-z0-9._~!$&'()+,;=@-]+").match(self._text, self._pos)
        if found is None:
            raise RouteError(f"expected a path segment at {self._pos} in {self._text!r}")
        self._pos = found.end()
        return found.group()

    def _variable(self) -> str:
        self._pos += 1  # "{"
        found = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*").match(
            self._text, self._pos
        )
        if found is None:
            raise RouteError(f"expected a field path at {self._pos} in {self._text!r}")
        self._pos = found.end()
        field_path = tuple(found.group().split("."))
        pattern = "[^/]+"
        multi = False
        if self._peek() == "=":
            self._pos += 1
            start = self._pos
            pattern = self._segments(in_variable=True)
            multi = "/" in self._text[start : self._pos] or "**" in self._text[start : self._pos]
        if self._peek() != "}":
            raise RouteError(f"unclosed variable in {self._text!r}")
        self._pos += 1
        self._openapi.append("{" + ".".join(field_path) + "}")
        index = len(self._variables)
        self._variables.append(PathVariable(field_path, multi))
        return f"(?P<v{index}>{pattern})"


@dataclasses.dataclass(frozen=True)
class Route:
    """One HTTP binding of one RPC."""

    http_method: str
    template: PathTemplate
    method: MethodDescriptor
    grpc_path: str
    body: str  # "" (no body), "*" (the whole request) or a top-level field name
    response_body: str  # "" (the whole response) or a top-level field name
    public: bool
    request_class: type[Message]
    response_class: type[Message]
    # An OAuth 2.0 endpoint ((luman.api.v1.oauth_endpoint), oauth.py): form bodies accepted,
    # errors in RFC 6749's shape.
    oauth_endpoint: bool = False
    # Which of the RPC's bindings: 0 for the rule itself, 1 for its first additional binding...
    binding: int = 0

    @property
    def operation_id(self) -> str:
        """Unique per binding, as OpenAPI requires: an additional binding gets its number
        (ListAuditEvents, ListAuditEvents2), as grpc-gateway's generator names them."""
        suffix = str(self.binding + 1) if self.binding else ""
        return f"{self.method.containing_service.name}_{self.method.name}{suffix}"

    def path_fields(self) -> frozenset[str]:
        """Top-level request fields the URL path sets."""
        return frozenset(v.field_path[0] for v in self.template.variables)

    def bound_fields(self) -> frozenset[str]:
        """Top-level request fields a client may not set outside the path: the path fields and
        the other members of their oneofs (a URL that names the organization by slug leaves no
        room for an organization_id)."""
        descriptor = self.method.input_type
        names = set(self.path_fields())
        for name in list(names):
            field = descriptor.fields_by_name[name]
            if field.containing_oneof is not None:
                names.update(f.name for f in field.containing_oneof.fields)
        return frozenset(names)


@dataclasses.dataclass(frozen=True)
class RouteMatch:
    route: Route
    path_values: dict[PathVariable, str]


class RouteTable:
    """All routes, matched by method and percent-encoded path."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = tuple(routes)
        seen: dict[tuple[str, str], Route] = {}
        for route in self.routes:
            key = (route.http_method, route.template.openapi_path)
            if key in seen:
                raise RouteError(
                    f"{route.grpc_path} and {seen[key].grpc_path} both bind "
                    f"{route.http_method} {route.template.template}"
                )
            seen[key] = route
        # Literal templates (most of them) are found with one dict lookup.
        self._literal: dict[tuple[str, str], Route] = {
            (r.http_method, r.template.template): r for r in self.routes if not r.template.variables
        }

    def match(self, http_method: str, raw_path: str) -> RouteMatch | None:
        """The route for this method and path, or None.

        Raises:
            PathDecodeError: the path matches but a variable is not valid UTF-8.
        """
        literal = self._literal.get((http_method, raw_path))
        if literal is not None:
            return RouteMatch(literal, {})
        for route in self.routes:
            if route.http_method != http_method or not route.template.variables:
                continue
            values = route.template.match(raw_path)
            if values is not None:
                return RouteMatch(route, values)
        return None

    def allowed_methods(self, raw_path: str) -> tuple[str, ...]:
        """Methods with a route for this path (for 405 and CORS preflight answers)."""
        allowed: list[str] = []
        for route in self.routes:
            if route.http_method in allowed:
                continue
            try:
                if route.template.match(raw_path) is not None:
                    allowed.append(route.http_method)
            except PathDecodeError:
                allowed.append(route.http_method)
        return tuple(m for m in HTTP_METHODS if m in allowed)


def build_routes(services: tuple[ServiceDescriptor, ...] = methods.SERVICES) -> RouteTable:
    """Read every RPC's google.api.http rule (and its additional_bindings).

    Raises:
        RouteError: a rule is malformed; the server must not start with a half-built table.
    """
    policies = methods.policies(services)
    routes: list[Route] = []
    for service in services:
        for method in service.methods:
            options = method.GetOptions()
            if not options.HasExtension(annotations_pb2.http):
                continue
            rule = options.Extensions[annotations_pb2.http]
            grpc_path = methods.method_path(service, method.name)
            for index, binding in enumerate(_bindings(rule)):
                route = _route(method, grpc_path, binding, policies[grpc_path].public)
                routes.append(dataclasses.replace(route, binding=index) if index else route)
    return RouteTable(routes)


def _bindings(rule: http_pb2.HttpRule) -> Iterator[http_pb2.HttpRule]:
    yield rule
    for extra in rule.additional_bindings:
        if extra.additional_bindings:
            raise RouteError("additional_bindings may not nest")
        yield extra


def _route(
    method: MethodDescriptor, grpc_path: str, rule: http_pb2.HttpRule, public: bool
) -> Route:
    kind = rule.WhichOneof("pattern")
    if kind is None:
        raise RouteError(f"{grpc_path}: google.api.http rule without a method and path")
    if kind == "custom":
        http_method, path = rule.custom.kind.upper(), rule.custom.path
    else:
        http_method, path = kind.upper(), getattr(rule, kind)
    if http_method not in HTTP_METHODS:
        raise RouteError(f"{grpc_path}: unsupported HTTP method {http_method}")
    template = parse_template(path)
    request = method.input_type
    for variable in template.variables:
        field = _resolve(request, variable.field_path, grpc_path)
        if field.is_repeated or field.message_type is not None:
            raise RouteError(f"{grpc_path}: path variable {variable.name} must be a scalar field")
    for name, what in ((rule.body, "body"), (rule.response_body, "response_body")):
        if name and name != "*" and "." in name:
            raise RouteError(f"{grpc_path}: {what} must name a top-level field")
    if rule.body and rule.body != "*":
        _resolve(request, (rule.body,), grpc_path)
    if rule.response_body:
        _resolve(method.output_type, (rule.response_body,), grpc_path)
    return Route(
        http_method=http_method,
        template=template,
        method=method,
        grpc_path=grpc_path,
        body=rule.body,
        response_body=rule.response_body,
        public=public,
        request_class=message_factory.GetMessageClass(method.input_type),
        response_class=message_factory.GetMessageClass(method.output_type),
        oauth_endpoint=method.GetOptions().Extensions[api_annotations_pb2.oauth_endpoint],
    )


def _resolve(descriptor: Descriptor, field_path: tuple[str, ...], where: str) -> FieldDescriptor:
    current: Descriptor | None = descriptor
    field: FieldDescriptor | None = None
    for name in field_path:
        if current is None:
            raise RouteError(f"{where}: {'.'.join(field_path)} walks into a scalar field")
        field = current.fields_by_name.get(name)
        if field is None:
            raise RouteError(f"{where}: {current.full_name} has no field {name!r}")
        current = field.message_type
    assert field is not None
    return field
