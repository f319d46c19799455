"""AMD SEV for guest owners and hosts.

* :mod:`~qomhost.sev.ioctl` -- the kernel's interfaces (``/dev/sev``'s
  ``SEV_ISSUE_CMD`` and KVM's ``KVM_MEMORY_ENCRYPT_OP``) as ctypes structures;
* :mod:`~qomhost.sev.cpuid` -- the host's C-bit position (CPUID 0x8000001F);
* :mod:`~qomhost.sev.launch` -- QEMU's start-up checks (``sev_kvm_init``);
* :mod:`~qomhost.sev.policy` -- guest policy bits, encoded and decoded;
* :mod:`~qomhost.sev.ovmf` -- the GUIDed table at the end of an OVMF image;
* :mod:`~qomhost.sev.hashes` -- the kernel hashes table QEMU puts in firmware;
* :mod:`~qomhost.sev.measure` -- the launch digest and the launch measurement.

Nothing here needs SEV hardware except the ioctls themselves.
"""
