/* version.h: the version of pickline's programs. Its one home is VERSION in
 * SConstruct; tools/SConscript writes version.c from it, adding `git
 * describe` of the checkout the build was made from (none from a tarball).
 * pickline, qctl and qload print it for --version:
 *
 *     pickline 0.1.0 (git 8397b2b-dirty)
 */
#ifndef PL_VERSION_H
#define PL_VERSION_H

/* pl_version is "0.1.0", or "0.1.0 (git DESCRIBE)" when built from a
 * checkout. */
extern const char pl_version[];

#endif
