"""Cryptographic helpers for the secret objects and their consumers.

Each routine reproduces the QEMU 7.2 or GLib 2.74 function it is named
after, so that decoded and derived bytes are the ones QEMU produces.
"""
