"""vhost-user: a virtio device's data path served by another process.

A vhost-user *frontend* (QEMU, or qomhost's ``cryptodev-vhost-user``) owns
the virtqueues and the guest memory; a *backend* (a separate program) does
the device's work. The two talk over a unix socket: the frontend sends
requests (features, memory table, ring addresses, eventfds, crypto
sessions) and the backend answers some of them. File descriptors -- the
memory regions' memfds and the kick/call eventfds -- travel beside the
bytes as ``SCM_RIGHTS`` ancillary data.

:mod:`qomhost.vhost_user.protocol` is that conversation without I/O: bytes
and fds in, message objects out, and back. Nothing here opens a socket, so
it can be tested, fuzzed and reused by either end.

:mod:`qomhost.vhost_user.memory` is the guest memory both ends share
(memfds the frontend allocates and the backend maps from
``SET_MEM_TABLE``), and :mod:`qomhost.vhost_user.virtqueue` the split
virtqueues in it, with a driver's end for the frontend and a device's end
for the backend.
"""
