#!/bin/busybox sh
# /init of the guest tests' initramfs: load virtio-pci, virtio_crypto and
# AF_ALG, show what the virtio-crypto driver registered and how its self-test
# went, run /plan (written by the host for each scenario), power off.
# Every line meant for the host starts with "QG ".
/bin/busybox mkdir -p /proc /sys /dev /tmp
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s /bin
export PATH=/bin
echo "QG init kernel=$(uname -r) uptime=$(cut -d' ' -f1 /proc/uptime)"
for m in $(cat /modules.order); do
  insmod "/lib/modules/$m.ko" || echo "QG insmod-failed $m"
done
# the driver registers its algorithm once the device is up; the self-test
# runs at registration, before the entry shows up in /proc/crypto
i=0
while [ $i -lt 100 ] && ! grep -q virtio_crypto_aes_cbc /proc/crypto; do
  sleep 0.1; i=$((i+1))
done
echo "QG ready uptime=$(cut -d' ' -f1 /proc/uptime)"
# one line per /proc/crypto entry of a virtio driver: "QG crypto name=... | driver=... | ..."
awk 'BEGIN { RS=""; FS="\n" }
     /driver *: *virtio/ {
       line = "QG crypto"
       for (i = 1; i <= NF; i++) { gsub(/[ \t]+:[ \t]+/, "=", $i); gsub(/[ \t]/, "", $i); line = line " " $i }
       print line
     }' /proc/crypto
echo "QG crypto-done"
dmesg -c | grep -iE 'virtio|alg:' | sed 's/^/QG dmesg /'
. /plan
echo "QG plan-done uptime=$(cut -d' ' -f1 /proc/uptime)"
dmesg | grep -iE 'virtio_crypto|alg:' | sed 's/^/QG dmesg-end /'
poweroff -f
