#!/bin/sh
# The relay's owner (sql/roles.sql): creates the relay schema, the site
# roles (CREATEROLE) and runs HO's worker against the relay.
set -eu
psql -v ON_ERROR_STOP=1 -U postgres -d relay <<SQL
CREATE ROLE relaysync_relay LOGIN CREATEROLE PASSWORD '$(cat /secrets/relay.pw)';
GRANT CREATE ON DATABASE relay TO relaysync_relay;
SQL
