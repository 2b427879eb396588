# Runs one Swift server (account, container, object or proxy) of the
# throw-away S3 endpoint that tests/s3/swift-start sets up.  Run it with
# /usr/bin/python3 (Debian's python3-swift), not a python3 found on PATH.
#
# usage: swift-launch.py STATE_DIR SERVER    (SERVER: account-server, ...)
#
# Swift reads /etc/swift/swift.conf and logs to syslog; this points it at
# STATE_DIR/etc and sends its log to stderr instead (the caller redirects
# that to STATE_DIR/log/SERVER.log).
#
# Test-only patch (proxy only): s3api 2.30 answers 501 NotImplemented to
# every conditional PUT, 'If-None-Match: *' included.  While the file
# STATE_DIR/if-none-match exists, a PUT with 'If-None-Match: *' is let
# through s3api's header check, and Swift's proxy then enforces it as real
# S3 does (412 PreconditionFailed when the key exists, else the PUT
# proceeds).  Without the file the stock behaviour (501) is kept.  The file
# is checked on each request, so a test can switch between both at run time.
import os
import sys

# Start-up speed (each server takes ~1 s of CPU otherwise, and four start
# at once on two cores): everything is on 127.0.0.1, so eventlet's green DNS
# (dnspython) is not needed; and Swift's monkey-patching (in run_wsgi) is
# done here first, without the full gc.collect() eventlet runs for each
# RLock it replaces (it only drops garbage before gc.get_referrers()).
os.environ.setdefault('EVENTLET_NO_GREENDNS', 'yes')
import gc  # noqa: E402

import eventlet  # noqa: E402

_collect = gc.collect
gc.collect = lambda *a, **kw: 0
try:
    eventlet.patcher.monkey_patch(all=False, socket=True, select=True,
                                  thread=True)
finally:
    gc.collect = _collect

import logging  # noqa: E402

state_dir, server = sys.argv[1], sys.argv[2]
etc = os.path.join(state_dir, 'etc')

from swift.common import utils  # noqa: E402

utils.set_swift_dir(etc)
utils.ThreadSafeSysLogHandler = lambda *a, **kw: logging.NullHandler()

from swift.common import constraints, storage_policy  # noqa: E402

storage_policy.reload_storage_policies()
constraints.reload_constraints()

if server == 'proxy-server':
    from swift.common.middleware.s3api import s3request

    flag = os.path.join(state_dir, 'if-none-match')
    _orig_validate = s3request.S3Request._validate_headers

    def _validate_headers(self):
        inm = self.headers.get('If-None-Match')
        patch = (self.method == 'PUT' and inm == '*'
                 and os.path.exists(flag))
        if patch:
            del self.headers['If-None-Match']
        try:
            _orig_validate(self)
        finally:
            if patch:
                self.headers['If-None-Match'] = inm

    s3request.S3Request._validate_headers = _validate_headers

import swift.common.wsgi  # noqa: E402
from swift.common.wsgi import run_wsgi  # noqa: E402

# eventlet's listen() sets SO_REUSEPORT: a second server (of another test)
# binding the same port would then silently share it.  Without it a taken
# port fails the bind (after bind_timeout), and swift-start picks new ports.
swift.common.wsgi.listen = lambda *a, **kw: eventlet.listen(
    *a, reuse_port=False, **kw)

kw = {'verbose': True}
if server == 'object-server':
    from swift.obj import server as obj_server
    kw['global_conf_callback'] = obj_server.global_conf_callback
sys.exit(run_wsgi(os.path.join(etc, server + '.conf'), server, **kw))
