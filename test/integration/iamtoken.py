"""RDS IAM authentication tokens as botocore makes them, for comparing
pgtenant's (src/rdstoken.c) with: botocore's own generate_db_auth_token
with its clock frozen at a given instant and given credentials.

As a program (used by test/unit/test_rdstoken.c):
  iamtoken.py ACCESS SECRET TOKEN HOST PORT REGION USER EPOCH
prints the token; TOKEN "-" = no session token.  Exit 77 when botocore is
missing.
"""
import datetime
import sys
import urllib.parse
from unittest import mock


def botocore_token(access, secret, token, host, port, region, user, when):
    """The token botocore makes at `when` (a UTC datetime or epoch seconds)."""
    import botocore.auth
    import botocore.session

    if not isinstance(when, datetime.datetime):
        when = datetime.datetime.fromtimestamp(int(when), datetime.timezone.utc).replace(tzinfo=None)
    frozen = when

    class Frozen(datetime.datetime):
        @classmethod
        def utcnow(cls):
            return frozen

    session = botocore.session.Session()
    session.set_credentials(access, secret, token)
    client = session.create_client("rds", region_name=region)
    with mock.patch.object(botocore.auth.datetime, "datetime", Frozen):
        return client.generate_db_auth_token(host, port, user, region)


def token_params(tok):
    """The query parameters of a token, decoded."""
    return dict(urllib.parse.parse_qsl(tok.split("?", 1)[1], keep_blank_values=True))


def token_time(tok):
    """The X-Amz-Date of a token as a UTC datetime."""
    return datetime.datetime.strptime(token_params(tok)["X-Amz-Date"], "%Y%m%dT%H%M%SZ")


def main(argv):
    try:
        import botocore  # noqa: F401
    except ImportError:
        return 77
    access, secret, token, host, port, region, user, epoch = argv[1:9]
    print(botocore_token(access, secret, None if token == "-" else token, host, int(port), region, user,
                         int(epoch)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
