"""virtio-crypto: the request formats a crypto device and its driver share.

A virtio-crypto device has one control queue (create and destroy
sessions) and data queues (encrypt, decrypt, hash, ...). A session binds an
algorithm and a key once; data requests then name the session by id.
:mod:`qomhost.cryptodev.virtio_crypto` holds the constants and byte
layouts of those requests, of the device's config space, and of the
session payload of vhost-user's ``CREATE_CRYPTO_SESSION``, by which a
frontend asks a vhost-user backend to create the session for it.
"""
