"""``nsfl-ctl pki init|issue|enroll|enrollment-token|revoke|rotate|show``: certificates for the wire.

Thin commands over ``nsfl_ctl.pki`` (a PKI directory on this machine) and
``nsfl_ctl.enrollment`` (the API server's enrolment and revocation).  Each
one that writes a certificate prints the three paths a component's
``tls_ca``, ``tls_cert`` and ``tls_key`` settings take.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import click

from libs.errors import InvalidState, ValidationFailed
from libs.pki.authority import DEFAULT_LEAF_DAYS
from libs.pki.directory import IssuedFiles, PkiDirectory
from libs.pki.identity import CONTROL_NAMES, DEFAULT_TRUST_DOMAIN, Identity
from nsfl_ctl import certificates, enrollment
from nsfl_ctl import pki as local_pki
from nsfl_ctl.commands.common import Session, pass_session
from nsfl_ctl.output import Column, emit, output_option, print_fields, stderr_console

DIR_HELP = "The PKI directory (ca.pem, issuer.pem, issuer-key.pem, crl.pem, issued/)."
FACT_FIELDS = (("Identity", "identity"), ("Subject", "subject"), ("Issuer", "issuer"), ("Serial", "serial"),
               ("Not before", "notBefore"), ("Not after", "notAfter"), ("CA", "isCa"), ("Revoked", "revoked"))  # fmt: skip
ISSUED_COLUMNS = (
    Column("IDENTITY", lambda f: f["identity"], no_wrap=True),
    Column("SERIAL", lambda f: f["serial"][:16], no_wrap=True),
    Column("NOT AFTER", lambda f: f["notAfter"][:19], no_wrap=True),
    Column("REVOKED", lambda f: "yes" if f["revoked"] else "no", no_wrap=True),
    Column("CERTIFICATE", lambda f: f["path"]),
)


def _dir_option(required: bool) -> Callable[[click.decorators.FC], click.decorators.FC]:
    return click.option("--dir", "directory", required=required, default=None,
                        type=click.Path(file_okay=False, path_type=Path), help=DIR_HELP)  # fmt: skip


def _identity_options(function: click.decorators.FC) -> click.decorators.FC:
    function = click.option("--coordinator", metavar="NS/JOB", default=None,
                            help="A job's coordinator (the scheduler issues these at launch).")(function)  # fmt: skip
    function = click.option("--client", metavar="ID", default=None, help="A data owner's task manager.")(
        function
    )
    return click.option("--control", type=click.Choice(sorted(CONTROL_NAMES)), default=None,
                        help="A control-plane service.")(function)  # fmt: skip


def _issue_options(function: click.decorators.FC) -> click.decorators.FC:
    function = click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
                            help="Write cert.pem, key.pem and ca.pem here instead of under issued/.")(function)  # fmt: skip
    function = click.option("--days", type=click.FloatRange(min=0, min_open=True), default=DEFAULT_LEAF_DAYS,
                            show_default=True, help="Validity in days.")(function)  # fmt: skip
    return click.option("--host", "hosts", multiple=True, metavar="H",
                        help="Another DNS name or IP address a server is reached by (repeatable).")(function)  # fmt: skip


def _print_files(files: IssuedFiles, directory: PkiDirectory | None = None) -> None:
    click.echo(f"tls_ca: {files.ca.resolve()}")
    click.echo(f"tls_cert: {files.cert.resolve()}")
    click.echo(f"tls_key: {files.key.resolve()}")
    if directory is not None:
        click.echo(f"tls_crl: {directory.crl.resolve()}")


@click.group("pki")
def pki_group() -> None:
    """Certificates for mutual TLS: a CA, control-plane and client certificates, enrolment, revocation."""


@pki_group.command("init")
@_dir_option(required=True)
@click.option("--trust-domain", default=DEFAULT_TRUST_DOMAIN, show_default=True,
              help="The spiffe:// trust domain every identity of this PKI lives in.")  # fmt: skip
@click.option("--parent-cert", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Your CA's certificate: nsfl's CA becomes an intermediate under it.")  # fmt: skip
@click.option("--parent-key", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Your CA's private key (unencrypted PEM), used once to sign the intermediate.")  # fmt: skip
def init(directory: Path, trust_domain: str, parent_cert: Path | None, parent_key: Path | None) -> None:
    """Create a CA in DIR: a root, or an intermediate under a CA you bring."""
    if (parent_cert is None) != (parent_key is None):
        raise ValidationFailed("give both --parent-cert and --parent-key, or neither")
    issuer = local_pki.init(directory, trust_domain, parent_cert=parent_cert, parent_key=parent_key)
    kind = "an intermediate CA under your CA" if parent_cert else "a root CA"
    click.echo(f"created {kind} in {directory} (trust domain {trust_domain})")
    click.echo(f"  {issuer.subject}, valid until {issuer.not_after:%Y-%m-%d}")
    click.echo(f"  trust bundle for every component's tls_ca: {PkiDirectory(directory).ca.resolve()}")


@pki_group.command("issue")
@_dir_option(required=True)
@_identity_options
@_issue_options
def issue(
    directory: Path, control: str | None, client: str | None, coordinator: str | None, hosts: tuple[str, ...],
    days: float, out: Path | None,
) -> None:  # fmt: skip
    """Issue a key and certificate for a control-plane service, a client or a coordinator."""
    _write_identity(local_pki.issue, "issued {uri}", directory, control, client, coordinator, hosts, days, out)


@pki_group.command("rotate")
@_dir_option(required=True)
@_identity_options
@_issue_options
def rotate(
    directory: Path, control: str | None, client: str | None, coordinator: str | None, hosts: tuple[str, ...],
    days: float, out: Path | None,
) -> None:  # fmt: skip
    """Re-issue a key and certificate in place; servers use it from their next handshake on."""
    _write_identity(
        local_pki.rotate, "rotated {uri}: new connections use the new certificate",
        directory, control, client, coordinator, hosts, days, out,
    )  # fmt: skip


def _write_identity(
    write: Callable[..., IssuedFiles], said: str, directory: Path, control: str | None, client: str | None,
    coordinator: str | None, hosts: tuple[str, ...], days: float, out: Path | None,
) -> None:  # fmt: skip
    """``issue`` and ``rotate``: the chosen identity's key and certificate written, their paths printed."""
    pki = certificates.open_directory(directory)
    identity = local_pki.chosen_identity(
        pki.trust_domain(), control=control, client=client, coordinator=coordinator
    )
    files = write(directory, identity, hosts=hosts, days=days, out=out)
    click.echo("# " + said.format(uri=identity.uri), err=True)
    _print_files(files, pki)


@pki_group.command("enroll")
@click.option("--api", "api_url", required=True, metavar="URL", help="The API server's base URL.")
@click.option("--token", required=True, envvar="NSFL_ENROLLMENT_TOKEN",
              help="The one-time enrolment token from your admin (or $NSFL_ENROLLMENT_TOKEN).")  # fmt: skip
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Where to write cert.pem, key.pem (0600) and ca.pem.")  # fmt: skip
@click.option("--ca-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="The CA that signed the API server's HTTPS certificate, if it is not a public one.")  # fmt: skip
@pass_session
def enroll(session: Session, api_url: str, token: str, out: Path, ca_file: Path | None) -> None:
    """On a data owner's host: make a key, redeem an enrolment token for its certificate."""
    enrolled = enrollment.enroll(
        api_url, token, out, ca_file=ca_file, timeout=session.request_timeout,
        warn=lambda line: click.echo(line, err=True),
    )  # fmt: skip
    click.echo(f"# enrolled as {enrolled.identity.uri}, valid until {enrolled.not_after[:19]}", err=True)
    click.echo("# put these in the task manager's config:", err=True)
    for key, value in enrolled.config_keys().items():
        click.echo(f"{key}: {value}")


@pki_group.command("enrollment-token")
@click.option("--client", "client_id", required=True, metavar="ID", help="The client id the token may claim.")
@click.option(
    "--ttl", default="24h", show_default=True, help="How long the token may be redeemed (s, m, h, d)."
)
@output_option
@pass_session
def enrollment_token(session: Session, client_id: str, ttl: str, output: str) -> None:
    """(admin) Create a one-time enrolment token for one client id."""
    Identity.client(client_id)
    seconds = enrollment.parse_duration(ttl)
    api = session.client()
    reply = api.post(enrollment.TOKENS_PATH, {"clientId": client_id, "ttlSeconds": seconds})
    if output != "table":
        emit(reply, output)
        return
    print_fields([("Client", reply.get("clientId")), ("Token", reply.get("token")),
                  ("Expires", reply.get("expiresAt"))])  # fmt: skip
    stderr_console().print(
        "shown once; on the client's host run:\n"
        f"  nsfl-ctl pki enroll --api {api.base_url} --token <the token> --out <folder>", highlight=False,
    )  # fmt: skip


@pki_group.command("revoke")
@_dir_option(required=False)
@click.option("--cert", "cert_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The certificate file to revoke (with --dir).")  # fmt: skip
@click.option("--client", "client_id", metavar="ID", default=None,
              help="Revoke every certificate of this client (locally with --dir, else through the API).")  # fmt: skip
@click.option("--serial", "serials", multiple=True, metavar="N",
              help="With --dir --client: also a certificate known by serial only (decimal, or hex as 0x...), "
                   "as the API names enrolled ones it could not revoke itself (repeatable).")  # fmt: skip
@click.option("--reason", default="", help="Why, kept in revoked.json.")
@pass_session
def revoke(
    session: Session, directory: Path | None, cert_file: Path | None, client_id: str | None,
    serials: tuple[str, ...], reason: str,
) -> None:  # fmt: skip
    """Revoke a certificate or a client; servers refuse it from their next call on."""
    if (cert_file is None) == (client_id is None):
        raise ValidationFailed("give exactly one of --cert FILE or --client ID")
    if serials and (directory is None or client_id is None):
        raise ValidationFailed("--serial goes with --dir DIR --client ID")
    if directory is None:
        if cert_file is not None:
            raise ValidationFailed("revoking a certificate file needs the PKI directory that issued it: add --dir")
        _revoke_through_the_api(session, str(client_id), reason)
        return
    if cert_file is not None:
        revoked = [local_pki.revoke_certificate(directory, cert_file, reason)]
    else:
        numbers = [enrollment.parse_serial(serial) for serial in serials]
        revoked = local_pki.revoke_client(directory, str(client_id), reason, numbers)
        for number in numbers:
            click.echo(f"revoked client {client_id} serial {number:x} (by serial)")
    for facts in revoked:
        click.echo(f"revoked {facts.identity} serial {facts.serial} ({facts.path})")
    click.echo(f"the revocation list {PkiDirectory(directory).crl} was rewritten; servers reload it on their own")


def _revoke_through_the_api(session: Session, client_id: str, reason: str) -> None:
    try:
        reply = session.client().post(enrollment.revoke_path(client_id), {"reason": reason} if reason else {})
    except InvalidState as error:
        raise enrollment.revoke_elsewhere(error, client_id) from None
    reply = reply if isinstance(reply, dict) else {}
    certificates = reply.get("revokedCertificates") or []
    click.echo(f"revoked client {client_id} through the API: {len(certificates)} certificate(s), "
               f"{reply.get('revokedTokens', 0)} unused enrolment token(s)")  # fmt: skip
    for entry in certificates:
        serial = str(entry.get("serial"))
        shown = format(int(serial), "x") if serial.isdigit() else serial  # as `pki show` prints serials
        click.echo(f"  serial {shown} (valid until {entry.get('expiresAt')})")


@pki_group.command("show")
@_dir_option(required=False)
@click.option("--cert", "cert_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A certificate file (with --dir: also whether that PKI revoked it).")  # fmt: skip
@output_option
def show(directory: Path | None, cert_file: Path | None, output: str) -> None:
    """Show a certificate, or a PKI directory's CA and issued identities."""
    if directory is None and cert_file is None:
        raise ValidationFailed("give --dir DIR, --cert FILE, or both")
    if cert_file is not None:
        pki = certificates.open_directory(directory) if directory is not None else None
        facts = certificates.certificate_facts(cert_file, pki).as_dict()
        if output != "table":
            emit(facts, output)
            return
        revoked = {True: "yes", False: "no", None: "unknown (give --dir, the PKI that issued it)"}
        shown: Mapping[str, object] = {**facts, "revoked": revoked[facts["revoked"]]}
        print_fields([(label, shown[key]) for label, key in FACT_FIELDS])
        return
    assert directory is not None
    document = certificates.directory_facts(directory)
    if output != "table":
        emit(document, output)
        return
    issuer, root = document["issuer"], document["root"]
    print_fields([("Directory", document["directory"]), ("Trust domain", document["trustDomain"]),
                  ("Root CA", f"{root['subject']} (until {root['notAfter'][:10]})"),
                  ("Issuing CA", f"{issuer['subject']} (until {issuer['notAfter'][:10]})"),
                  ("Revoked", len(document["revoked"]))])  # fmt: skip
    click.echo()
    emit(document, output, rows=document["issued"], columns=ISSUED_COLUMNS)
