#!/bin/sh
# Regenerates the certificates the tls-creds-x509 cases load (run from this
# directory; needs the openssl CLI). EC P-256 keys keep the files small;
# everything but expired-cert.pem is valid for a century.
set -eu
rm -f ./*.pem ./*.csr ./*.srl ./index.txt* ./serial.txt* ./*.cnf
cat > ext.cnf <<'CNF'
[req]
distinguished_name = dn
[dn]
[ca_ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
[ca_nobc]
keyUsage = critical,keyCertSign,cRLSign
[ca_notca]
basicConstraints = critical,CA:FALSE
keyUsage = critical,keyCertSign,cRLSign
[ca_nocertsign]
basicConstraints = critical,CA:TRUE
keyUsage = critical,digitalSignature
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost,IP:127.0.0.1
[client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
[leaf_is_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,digitalSignature
[client_only]
basicConstraints = critical,CA:FALSE
extendedKeyUsage = critical,clientAuth
[server_only]
basicConstraints = critical,CA:FALSE
extendedKeyUsage = critical,serverAuth
[no_digital_signature]
basicConstraints = critical,CA:FALSE
keyUsage = critical,keyAgreement
[ca]
default_ca = ca_default
[ca_default]
database = index.txt
serial = serial.txt
new_certs_dir = .
default_md = sha256
policy = anything
copy_extensions = none
[anything]
commonName = supplied
CNF
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }
selfsigned() { # cert key subject extensions [days]
  openssl req -x509 -new -key "$2" -subj "$3" -days "${5:-36500}" -config ext.cnf \
    -extensions "$4" -out "$1"; }
sign() { # cert subject extensions ca-cert ca-key days [openssl x509 options...]
  out=$1 subj=$2 ext=$3 cacert=$4 cakey=$5 days=$6
  shift 6
  openssl req -new -key leaf-key.pem -subj "$subj" -out leaf.csr
  openssl x509 -req -in leaf.csr -CA "$cacert" -CAkey "$cakey" -set_serial "$(od -An -N6 -tu8 /dev/urandom | tr -d ' ')" \
    -days "$days" -extfile ext.cnf -extensions "$ext" -out "$out" "$@"; }
key ca-key.pem
key other-ca-key.pem
key leaf-key.pem
selfsigned ca-cert.pem ca-key.pem "/CN=Test CA" ca_ext
selfsigned other-ca-cert.pem other-ca-key.pem "/CN=Test CA" ca_ext
selfsigned ca-nobc-cert.pem ca-key.pem "/CN=Test CA" ca_nobc
selfsigned ca-notca-cert.pem ca-key.pem "/CN=Test CA" ca_notca
selfsigned ca-nocertsign-cert.pem ca-key.pem "/CN=Test CA" ca_nocertsign
cp leaf-key.pem server-key.pem
cp leaf-key.pem client-key.pem
sign server-cert.pem "/CN=localhost" server ca-cert.pem ca-key.pem 36500
sign client-cert.pem "/C=GB/L=London/O=Example Org/CN=client" client ca-cert.pem ca-key.pem 36500
sign expired-cert.pem "/CN=localhost" server ca-cert.pem ca-key.pem -1
sign leaf-ca-cert.pem "/CN=localhost" leaf_is_ca ca-cert.pem ca-key.pem 36500
sign client-only-cert.pem "/CN=localhost" client_only ca-cert.pem ca-key.pem 36500
sign server-only-cert.pem "/CN=client" server_only ca-cert.pem ca-key.pem 36500
sign no-digital-signature-cert.pem "/CN=localhost" no_digital_signature ca-cert.pem ca-key.pem 36500
sign other-ca-signed-cert.pem "/CN=localhost" server other-ca-cert.pem other-ca-key.pem 36500
sign sha1-cert.pem "/CN=localhost" server ca-cert.pem ca-key.pem 36500 -sha1
# Not valid before 2100: only "openssl ca" takes a start date.
: > index.txt
echo 01 > serial.txt
openssl req -new -key leaf-key.pem -subj "/CN=localhost" -out leaf.csr
openssl ca -batch -config ext.cnf -cert ca-cert.pem -keyfile ca-key.pem \
  -startdate 21000101000000Z -enddate 21010101000000Z -extfile ext.cnf -extensions server \
  -notext -out future-cert.pem -infiles leaf.csr
openssl pkey -in leaf-key.pem -aes256 -passout pass:letmein -out server-key-encrypted.pem
key mismatched-key.pem
openssl genpkey -genparam -algorithm DH -pkeyopt group:ffdhe2048 -out dh-params.pem
rm -f ./*.csr ./*.srl ./index.txt* ./serial.txt* ./*.cnf ./[0-9A-F]*.pem ca-key.pem other-ca-key.pem leaf-key.pem
