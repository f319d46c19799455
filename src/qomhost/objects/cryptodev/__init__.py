"""Crypto backends: where a virtio-crypto device's work is done.

==============================  =============================================
``cryptodev-backend``           the parent; instantiable in QEMU 7.2, serves
                                nothing (:mod:`.base`, which also defines the
                                Python API every backend offers)
``cryptodev-backend-builtin``   in process, with ``cryptography`` (:mod:`.builtin`)
``cryptodev-vhost-user``        another process, over vhost-user (:mod:`.vhost_user`)
==============================  =============================================

The modules are imported only when their type is used.
"""
