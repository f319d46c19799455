"""Authorization objects: who may use a network service.

Each type answers one question, :meth:`~qomhost.objects.authz.base.QAuthZ.is_allowed`
``(identity) -> bool``, for a service that has already established who the
client is (a TLS client certificate's distinguished name, a SASL user name):

================  ==========================================================
``authz-simple``  one allowed identity, compared exactly
``authz-list``    ordered rules (exact or glob); the first match decides,
                  else the default policy
``authz-list-file``  an ``authz-list`` loaded from a JSON file and reloaded
                  when the file changes (also spelt ``authz-listfile``)
``authz-pam``     the PAM account stack of a service (``pam_acct_mgmt``)
================  ==========================================================

Consumers find the object by id with
:func:`~qomhost.objects.authz.base.authz_is_allowed_by_id`, which fails with
QEMU's messages when the id is unknown or names something else.

Library use::

    host.add_object("authz-list", "auth0", policy="deny",
                    rules=[{"match": "CN=*.example.com", "policy": "allow",
                            "format": "glob"}])
    authz_is_allowed_by_id(host, "auth0", "CN=laptop.example.com")   # True

The modules are imported only when their type is used.
"""
