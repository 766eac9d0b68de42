#!/bin/sh
# Run once by compose.yml's `secrets` service, into the `secrets` volume: a
# throwaway CA, a server certificate for ho, relay, site1 and site2 signed
# by it, pg_hba.conf taking TCP connections only over TLS with a SCRAM
# password, and a generated password for postgres, the relay's owner and
# each site's relay role. Replace all of it with your own CA and secrets.
set -eu
cd /secrets
[ -f ca.crt ] && exit 0
apk add --no-cache openssl >/dev/null
openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=relaysync compose CA" \
  -keyout ca.key -out ca.crt
openssl req -newkey rsa:2048 -nodes -subj "/CN=relaysync compose server" \
  -keyout server.key -out server.csr
printf 'subjectAltName=DNS:ho,DNS:relay,DNS:site1,DNS:site2\n' > san.ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 \
  -extfile san.ext -out server.crt
rm -f server.csr san.ext ca.key
printf 'local all all trust\nhostssl all all all scram-sha-256\n' > pg_hba.conf
for name in postgres relay store-001 store-002; do
  openssl rand -hex 24 > "$name.pw"
done
# The postgres user of the postgres image (uid 999) owns the key; the
# workers read the CA and the passwords.
chown 999:999 server.key && chmod 600 server.key
chmod 644 ca.crt server.crt pg_hba.conf *.pw
