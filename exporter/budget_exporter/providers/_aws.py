"""Plumbing shared by the AWS providers: sessions, role assumption, request counting, errors.

Reads nothing itself; :class:`AwsSession` builds the boto3 clients of ``aws_cost_explorer``
and ``aws_budgets`` and counts every request they send in
``budget_source_api_requests_total``.  Why it is built this way:
docs/providers-aws.md#credentials-and-accounts-both-providers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator

from budget_exporter.core.errors import SourceError
from budget_exporter.core.messages import excerpt
from budget_exporter.providers import _extras
from budget_exporter.providers._http import (
    USER_AGENT,
    RequestStatus,
    require_tls_off_loopback,
    status_of_response,
)
from budget_exporter.providers.base import ProviderContext, SourceConfig

EXTRA = "aws"
SDK_MODULES = ("boto3",)

ROLE_SESSION_SECONDS = 3600

# Error codes AWS uses for "slow down"; Cost Explorer throttles with
# LimitExceededException on HTTP 400.
THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "RequestThrottledException",
        "SlowDown",
    }
)
CREDENTIAL_CODES = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidAccessKeyId",
        "MissingAuthenticationToken",
    }
)
ACCESS_DENIED_CODES = frozenset(
    {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AuthorizationError"}
)
IAM_ACTIONS = {
    "GetCostAndUsage": "ce:GetCostAndUsage",
    "GetCostForecast": "ce:GetCostForecast",
    "DescribeBudgets": "budgets:ViewBudget",
    "DescribeNotificationsForBudget": "budgets:ViewBudget",
    "AssumeRole": "sts:AssumeRole",
}


def boto3_installed() -> bool:
    """Whether boto3 can be imported (found, not imported)."""
    return _extras.installed("boto3")


class AwsSourceConfig(SourceConfig):
    """Connection settings every AWS source has."""

    region_name: str = Field(default="us-east-1", pattern=r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")
    """Region used to sign requests (Cost Explorer and Budgets are global services
    served from us-east-1; China partitions use cn-northwest-1)."""
    profile: str | None = Field(default=None, min_length=1)
    """A named profile from the shared AWS config files, instead of the default chain."""
    role_arn: str | None = Field(
        default=None, pattern=r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9_+=,.@/-]+$"
    )
    """A role to assume with the base credentials (one source per account)."""
    external_id: str | None = Field(default=None, min_length=2, max_length=1224)
    role_session_name: str = Field(default="budget-exporter", pattern=r"^[A-Za-z0-9_+=,.@-]{2,64}$")
    endpoint_url: str | None = Field(default=None, pattern=r"^https?://\S+$")
    """Send every AWS request of this source here (a VPC endpoint, or moto_server): https,
    or plain http to a loopback address only (requests carry signed session tokens)."""

    secret_fields: ClassVar[frozenset[str]] = frozenset({"external_id"})

    @field_validator("endpoint_url")
    @classmethod
    def _tls_endpoint(cls, value: str | None) -> str | None:
        if value is not None:
            require_tls_off_loopback(value)
        return value

    @model_validator(mode="after")
    def _aws_consistent(self) -> AwsSourceConfig:
        if self.external_id is not None and self.role_arn is None:
            raise ValueError("external_id needs role_arn")
        problem = _extras.missing(self.provider, EXTRA, *SDK_MODULES)
        if problem:
            raise ValueError(problem)
        return self


def request_status(
    response_dict: dict[str, Any] | None,
    parsed_response: dict[str, Any] | None,
    exception: BaseException | None,
) -> RequestStatus:
    """The outcome of one HTTP attempt, in budget_source_api_requests_total terms."""
    from botocore.exceptions import ConnectTimeoutError, ReadTimeoutError

    if exception is not None or response_dict is None:
        if isinstance(exception, ReadTimeoutError | ConnectTimeoutError):
            return "timeout"
        return "network"
    code = int(response_dict.get("status_code") or 0)
    error = ((parsed_response or {}).get("Error") or {}).get("Code", "")
    if code == 429 or (code >= 400 and error in THROTTLING_CODES):
        return "throttled"
    return status_of_response(code)


class AwsSession:
    """Lazily built boto3 clients for one source, with counting and retries."""

    def __init__(self, config: AwsSourceConfig, context: ProviderContext) -> None:
        self.config = config
        self.context = context
        self._session: Any = None
        self._base: Any = None
        self._clients: dict[str, Any] = {}
        self._sts: Any = None

    def client(self, service: str) -> Any:
        """The source's client for ``service`` (created on first use, then reused)."""
        if service not in self._clients:
            self._clients[service] = self.new_client(service)
        return self._clients[service]

    def new_client(self, service: str) -> Any:
        """A fresh client on the source's (possibly assumed-role) credentials."""
        return self._make_client(self._session_for_clients(), service)

    def close(self) -> None:
        for client in [*self._clients.values(), self._sts]:
            if client is not None:
                with suppress(Exception):  # closing must never fail a reload
                    client.close()
        self._clients.clear()
        self._sts = None
        self._session = None
        self._base = None

    # -- internals -----------------------------------------------------------------

    def _boto_config(self) -> Any:
        from botocore.config import Config

        timeout = max(self.context.timeout.total_seconds(), 1.0)
        return Config(
            region_name=self.config.region_name,
            connect_timeout=timeout,
            read_timeout=timeout,
            retries={"mode": "adaptive", "total_max_attempts": self.context.retries + 1},
            user_agent_extra=USER_AGENT,
        )

    def _make_client(self, session: Any, service: str, **credentials: Any) -> Any:
        client = session.client(
            service,
            region_name=self.config.region_name,
            endpoint_url=self.config.endpoint_url,
            config=self._boto_config(),
            **credentials,
        )
        client.meta.events.register("response-received", self._count)
        return client

    def _count(
        self,
        response_dict: dict[str, Any] | None = None,
        parsed_response: dict[str, Any] | None = None,
        exception: BaseException | None = None,
        **_: Any,
    ) -> None:
        self.context.record_request(request_status(response_dict, parsed_response, exception))

    def _base_session(self) -> Any:
        if self._base is None:
            _extras.require(self.config.provider, EXTRA, *SDK_MODULES)
            import boto3

            self._base = boto3.session.Session(
                profile_name=self.config.profile, region_name=self.config.region_name
            )
        return self._base

    def _session_for_clients(self) -> Any:
        if self._session is None:
            base = self._base_session()
            self._session = base if self.config.role_arn is None else self._assumed(base)
        return self._session

    def _assumed(self, base: Any) -> Any:
        """A session whose credentials come from AssumeRole, refreshed before expiry."""
        import boto3
        import botocore.session
        from botocore.credentials import (
            CredentialProvider,
            CredentialResolver,
            DeferredRefreshableCredentials,
        )

        fetch = self._assume_role

        class AssumedRoleProvider(CredentialProvider):
            METHOD = "budget-exporter-assume-role"

            def load(self) -> Any:
                return DeferredRefreshableCredentials(refresh_using=fetch, method=self.METHOD)

        core = botocore.session.Session()
        core.register_component(
            "credential_provider", CredentialResolver(providers=[AssumedRoleProvider()])
        )
        return boto3.session.Session(botocore_session=core, region_name=self.config.region_name)

    def _assume_role(self) -> dict[str, str]:
        if self._sts is None:
            self._sts = self._make_client(self._base_session(), "sts")
        kwargs: dict[str, Any] = {
            "RoleArn": self.config.role_arn,
            "RoleSessionName": self.config.role_session_name,
            "DurationSeconds": ROLE_SESSION_SECONDS,
        }
        if self.config.external_id is not None:
            kwargs["ExternalId"] = self.config.external_id
        credentials = self._sts.assume_role(**kwargs)["Credentials"]
        expiry = credentials["Expiration"]
        if isinstance(expiry, datetime):
            expiry = expiry.astimezone(UTC).isoformat()
        return {
            "access_key": credentials["AccessKeyId"],
            "secret_key": credentials["SecretAccessKey"],
            "token": credentials["SessionToken"],
            "expiry_time": str(expiry),
        }


def describe_error(exc: BaseException, role_arn: str | None = None) -> str | None:
    """A clear, secret-free sentence for a botocore/boto3 error, or None if not one."""
    from botocore import exceptions as bx

    if isinstance(exc, bx.NoCredentialsError):
        return (
            "no AWS credentials found (looked in the environment, shared config/credentials "
            "files, web identity token (IRSA), container and instance metadata)"
        )
    if isinstance(exc, bx.ProfileNotFound | bx.PartialCredentialsError):
        return f"AWS credentials: {excerpt(str(exc))}"
    if isinstance(exc, bx.ClientError):
        error = exc.response.get("Error") or {}
        code = str(error.get("Code") or "Unknown")
        message = excerpt(str(error.get("Message") or ""))
        operation = exc.operation_name
        if operation == "AssumeRole":
            if code in CREDENTIAL_CODES:
                return f"cannot assume role {role_arn}: AWS rejected the base credentials ({code})"
            return f"cannot assume role {role_arn} ({code}): {message}".rstrip(": ")
        if code in CREDENTIAL_CODES:
            return f"{operation}: AWS rejected the credentials ({code})"
        if code in ACCESS_DENIED_CODES:
            action = IAM_ACTIONS.get(operation, operation)
            detail = f": {message}" if message else ""
            return f"{operation}: access denied, the credentials need {action} ({code}){detail}"
        if code in THROTTLING_CODES:
            return f"{operation}: throttled by AWS ({code}) after all retries"
        detail = f": {message}" if message else ""
        return f"{operation} failed ({code}){detail}"
    if isinstance(exc, bx.ParamValidationError):
        return f"invalid request parameters: {excerpt(str(exc))}"
    if isinstance(exc, bx.ReadTimeoutError | bx.ConnectTimeoutError):
        return f"AWS request timed out: {excerpt(str(exc))}"
    if isinstance(exc, bx.EndpointConnectionError | bx.ConnectionClosedError):
        return f"network error: {excerpt(str(exc))}"
    if isinstance(exc, bx.BotoCoreError):
        return f"AWS client error: {excerpt(str(exc))}"
    return None


def is_credential_error(exc: BaseException) -> bool:
    """Whether ``exc`` means the source cannot authenticate at all (not one API's problem)."""
    from botocore import exceptions as bx

    if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError | bx.ProfileNotFound):
        return True
    if isinstance(exc, bx.ClientError):
        code = (exc.response.get("Error") or {}).get("Code")
        return exc.operation_name == "AssumeRole" or code in CREDENTIAL_CODES
    return False


@contextmanager
def aws_errors(role_arn: str | None = None) -> Iterator[None]:
    """Turn botocore/boto3 exceptions raised inside into :class:`SourceError`."""
    try:
        yield
    except SourceError:
        raise
    except Exception as exc:
        if not boto3_installed():
            raise
        message = describe_error(exc, role_arn)
        if message is None:
            raise
        raise SourceError(message) from None
