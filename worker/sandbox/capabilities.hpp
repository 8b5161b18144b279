#pragma once
// The privilege layer of the launched child: no_new_privs, and every capability gone for good, so
// a task running as uid 0 (in its user namespace or, without one, on the host) holds no
// privilege and cannot regain one through execve of a setuid or file-capability binary (issue #4).
//
// Guarantees once drop_all_capabilities() returned 0 (tests/worker/sandbox/capabilities_test.cpp):
//  - the ambient, bounding, effective, permitted and inheritable sets are empty;
//  - securebits NOROOT, NO_CAP_AMBIENT_RAISE and the locks of NOROOT, NO_SETUID_FIXUP, KEEP_CAPS
//    and NO_CAP_AMBIENT_RAISE are set, so uid 0 is not special at execve (see
//    drop_all_capabilities() for the one tolerated EPERM);
//  - privileged calls fail, e.g. chown() of a file to another uid returns EPERM.
//
// Both functions run in the child between clone and execve: raw syscalls, no allocation; they
// return 0, or -1 with errno. Order in the launcher: set_no_new_privs(), Landlock,
// drop_all_capabilities(), seccomp last.

namespace kbfleet::worker {

// prctl(PR_SET_NO_NEW_PRIVS, 1). Required before apply_landlock() and apply_seccomp() once
// capabilities are gone; inherited across fork and execve and never cleared.
int set_no_new_privs() noexcept;

// In this order, as the bounding set and securebits need CAP_SETPCAP: make CAP_SETPCAP effective
// if it is only permitted; clear the ambient set; set and lock the securebits; drop capabilities
// 0..63 from the bounding set (EINVAL above the kernel's CAP_LAST_CAP ends the loop); capset()
// all-zero effective, permitted and inheritable.
// Needs CAP_SETPCAP permitted: call it before giving up uid 0, or after setresuid() with
// PR_SET_KEEPCAPS set (KEEP_CAPS is then cleared and locked here). Without it, EPERM (a plain
// setresuid() to a non-zero uid, a non-root worker without a user namespace): the bounding set
// cannot be emptied then. EPERM from PR_SET_SECUREBITS alone is tolerated: it means an ancestor
// locked a different securebits configuration (systemd SecureBits=keep-caps-locked with keep-caps
// set, say); with the bounding and ambient sets empty, execve grants uid 0 nothing anyway, which
// is what NOROOT would add.
int drop_all_capabilities() noexcept;

}  // namespace kbfleet::worker
