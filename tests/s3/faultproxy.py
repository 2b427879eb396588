#!/usr/bin/python3
"""Fault-injecting HTTP/1.1 proxy for the S3 tests (Python 3 stdlib only).

Listens on 127.0.0.1 and forwards each request, unchanged (Host header
included, so SigV4 signatures stay valid), to --target (the Swift S3
endpoint that tests/s3/swift-start prints).  Per request, drawn from a
seeded RNG, it may instead:

  error_500 / error_503   answer by itself, WITHOUT forwarding, with an
                          S3-style XML error (InternalError / SlowDown)
  reset_before            reset the client connection (RST: SO_LINGER 0)
                          right after reading the request head
  reset_after_request     forward the whole request, read the response
                          head, then reset the client (the request took
                          effect on the server; the client saw nothing)
  reset_mid_body          relay the response head and part of its body,
                          then reset (a short read for the client); when
                          the response has no body this becomes
                          reset_after_request
  delay                   sleep --delay-min..--delay-max seconds before
                          forwarding the request or before relaying the
                          response (on top of any of the above or none)

Keep-alive connections (client and upstream side), Content-Length and
chunked bodies in both directions, 'Expect: 100-continue' and bodies of any
size (streamed, never held in memory) are handled.

usage: /usr/bin/python3 faultproxy.py --target 127.0.0.1:PORT [options]
  --listen-port N      port to listen on (default 0: a free one)
  --port-file FILE     write the port there once listening (atomically);
                       it is also printed on stdout
  --pid-file FILE      write the proxy's pid there
  --seed N             RNG seed (default: from the clock, logged)
  --error-rate R       share of requests answered 500/503 (default 0.10)
  --reset-rate R       share of requests reset (default 0.05)
  --delay-rate R       share of requests delayed (default 0.05)
  --delay-min S, --delay-max S    delay range in seconds (0.2, 1.0)
  --errors 500,503     which error codes to inject (default both)
  --resets before,after_request,mid_body   which resets (default all)
  --methods GET,PUT,.. only requests with these methods get faults (and
                       delays)
  --max-consecutive N  never more than N faulty (error/reset) requests in
                       a row, over all connections (default 0: no limit)
  --passthrough        start with faults off (see SIGUSR2)
  --stats FILE         counters as key=value lines, rewritten at most once
                       a second while they change, and on exit
  --log FILE           one line per injected fault (default: stderr)
  --timeout S          socket I/O timeout (default 120)
  --tls-cert FILE      accept TLS (HTTPS) on the listening side with this
                       certificate (PEM, the chain after it); needs
                       --tls-key.  Upstream stays plain HTTP.  The
                       handshake is done in the connection's thread;
                       ALPN offers http/1.1 only.  A failed handshake is
                       logged and counted (tls_handshake_errors), is no
                       request and gets no answer.  Connections are closed
                       with a TCP FIN or RST, without close_notify.
  --tls-key FILE       the certificate's private key (PEM, unencrypted)

Signals: SIGTERM/SIGINT exit cleanly (stats written); SIGUSR1 turns faults
off (pass-through); SIGUSR2 turns them on; SIGHUP writes the stats now.

Stats keys: connections requests forwarded responses error_500 error_503
reset_before reset_after_request reset_mid_body delay faults
upstream_errors client_errors bytes_to_upstream bytes_to_client seed;
with --tls-cert also tls_handshakes (completed) and tls_handshake_errors.
"""

import argparse
import datetime
import os
import random
import select
import signal
import socket
import ssl
import struct
import sys
import threading
import time
from xml.sax.saxutils import escape

BUF = 256 * 1024
MAX_HEAD = 64 * 1024
RESETS = ('before', 'after_request', 'mid_body')


class InjectedReset(Exception):
    """Reset the client connection now (an injected fault)."""


class PeerClosed(Exception):
    """The peer closed the connection (EOF where data was expected)."""


class UpstreamFailed(Exception):
    """The upstream server could not be reached or broke a response."""


class Reader:
    """Buffered reading from a socket: lines for heads, raw for bodies."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()

    def _fill(self):
        data = self.sock.recv(BUF)
        if not data:
            raise PeerClosed()
        self.buf += data

    def readline(self, limit=MAX_HEAD):
        start = 0
        while True:
            i = self.buf.find(b'\n', start)
            if i >= 0:
                line = bytes(self.buf[:i + 1])
                del self.buf[:i + 1]
                return line
            if len(self.buf) > limit:
                raise ValueError('line too long')
            start = len(self.buf)
            self._fill()

    def read_head(self):
        """Returns the raw head (start line, headers, empty line)."""
        lines = []
        size = 0
        while True:
            line = self.readline()
            if not lines and line in (b'\r\n', b'\n'):
                continue  # tolerated: empty lines before a request
            lines.append(line)
            size += len(line)
            if size > MAX_HEAD:
                raise ValueError('head too large')
            if line in (b'\r\n', b'\n'):
                return b''.join(lines)

    def read_some(self, n):
        """At most n (>0) bytes; raises PeerClosed at EOF."""
        if self.buf:
            data = bytes(self.buf[:n])
            del self.buf[:n]
            return data
        data = self.sock.recv(min(n, BUF))
        if not data:
            raise PeerClosed()
        return data

    def read_exact(self, n):
        parts = []
        while n > 0:
            d = self.read_some(n)
            parts.append(d)
            n -= len(d)
        return b''.join(parts)


class Message:
    """A parsed request or response head."""

    def __init__(self, raw):
        self.raw = raw
        text = raw.decode('latin-1')
        lines = text.split('\n')
        self.start = lines[0].rstrip('\r')
        self.headers = {}
        for line in lines[1:]:
            line = line.rstrip('\r')
            if not line or ':' not in line:
                continue
            name, value = line.split(':', 1)
            name = name.strip().lower()
            value = value.strip()
            if name in self.headers:
                self.headers[name] += ', ' + value
            else:
                self.headers[name] = value

    def header(self, name):
        return self.headers.get(name, '')

    def tokens(self, name):
        return [t.strip().lower() for t in self.header(name).split(',')
                if t.strip()]

    def chunked(self):
        return 'chunked' in self.tokens('transfer-encoding')

    def content_length(self):
        v = self.header('content-length')
        if not v:
            return None
        v = v.split(',')[0].strip()
        if not v.isdigit():
            raise ValueError('bad Content-Length %r' % v)
        return int(v)


class Request(Message):
    def __init__(self, raw):
        super().__init__(raw)
        parts = self.start.split(' ')
        if len(parts) != 3 or not parts[2].startswith('HTTP/'):
            raise ValueError('bad request line %r' % self.start[:200])
        self.method, self.target, self.version = parts
        self.expect_continue = \
            self.header('expect').lower() == '100-continue'
        conn = self.tokens('connection')
        if self.version == 'HTTP/1.0':
            self.keep_alive = 'keep-alive' in conn
        else:
            self.keep_alive = 'close' not in conn

    def has_body(self):
        return self.chunked() or (self.content_length() or 0) > 0


class Response(Message):
    def __init__(self, raw, request):
        super().__init__(raw)
        parts = self.start.split(' ', 2)
        if len(parts) < 2 or not parts[0].startswith('HTTP/') or \
                not parts[1].isdigit():
            raise UpstreamFailed('bad status line %r' % self.start[:200])
        self.version = parts[0]
        self.status = int(parts[1])
        conn = self.tokens('connection')
        if self.version == 'HTTP/1.0':
            self.keep_alive = 'keep-alive' in conn
        else:
            self.keep_alive = 'close' not in conn
        if request.method == 'HEAD' or self.status in (204, 304) or \
                100 <= self.status < 200:
            self.framing = 'none'
        elif self.chunked():
            self.framing = 'chunked'
        elif self.content_length() is not None:
            self.framing = 'length'
        else:
            self.framing = 'close'
            self.keep_alive = False

    def has_body(self):
        if self.framing == 'none':
            return False
        if self.framing == 'length':
            return self.content_length() > 0
        return True


def reset(sock):
    """Closes sock with a TCP RST (SO_LINGER on, timeout 0)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                        struct.pack('ii', 1, 0))
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


def close(sock):
    if sock is None:
        return
    try:
        sock.close()
    except OSError:
        pass


def lingering_close(sock):
    """Closes a client connection gracefully: FIN first, then reads what the
    client still sends (a request body it had started) for up to 2 s, so
    that closing does not turn into an RST that could destroy the response
    before the client has read it."""
    try:
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(2.0)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and sock.recv(BUF):
            pass
    except OSError:
        pass
    close(sock)


class Proxy:
    def __init__(self, args):
        self.args = args
        host, _, port = args.target.rpartition(':')
        self.target = (host or '127.0.0.1', int(port))
        self.seed = args.seed if args.seed is not None else \
            int(time.time() * 1000) % 1000000007
        self.rng = random.Random(self.seed)
        self.lock = threading.Lock()
        self.log_lock = threading.Lock()
        self.stats_file_lock = threading.Lock()  # one writer at a time
        self.faults_on = not args.passthrough
        self.consecutive = 0
        self.stats = dict.fromkeys(
            ('connections', 'requests', 'forwarded', 'responses',
             'error_500', 'error_503', 'reset_before',
             'reset_after_request', 'reset_mid_body', 'delay', 'faults',
             'upstream_errors', 'client_errors', 'bytes_to_upstream',
             'bytes_to_client'), 0)
        self.tls = None
        if args.tls_cert:
            self.stats['tls_handshakes'] = 0
            self.stats['tls_handshake_errors'] = 0
            self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            try:
                self.tls.load_cert_chain(args.tls_cert, args.tls_key)
            except (OSError, ssl.SSLError) as e:
                sys.exit('faultproxy: cannot load --tls-cert %s / --tls-key '
                         '%s: %s' % (args.tls_cert, args.tls_key, e))
            self.tls.set_alpn_protocols(['http/1.1'])
        self.stats_version = 0
        self.stats_written = -1
        self.stop = threading.Event()
        self.conn_ids = 0
        self.log_file = open(args.log, 'a', buffering=1) if args.log \
            else sys.stderr
        self.methods = set(m.strip().upper() for m in args.methods.split(',')
                           if m.strip()) if args.methods else None
        self.errors = [int(c) for c in args.errors.split(',') if c.strip()]
        for c in self.errors:
            if c not in (500, 503):
                sys.exit('faultproxy: --errors takes 500 and/or 503')
        self.resets = [r.strip() for r in args.resets.split(',') if r.strip()]
        for r in self.resets:
            if r not in RESETS:
                sys.exit('faultproxy: --resets takes %s' % ','.join(RESETS))

    # ------------------------------------------------------------ bookkeeping

    def count(self, key, n=1):
        with self.lock:
            self.stats[key] += n
            self.stats_version += 1

    def log(self, msg):
        now = datetime.datetime.now().strftime('%H:%M:%S.%f')[:-3]
        with self.log_lock:
            try:
                self.log_file.write('%s faultproxy: %s\n' % (now, msg))
                self.log_file.flush()
            except (OSError, ValueError):
                pass

    def write_stats(self, force=False):
        if not self.args.stats:
            return
        with self.stats_file_lock:
            with self.lock:
                if not force and self.stats_version == self.stats_written:
                    return
                version = self.stats_version
                lines = ['%s=%d\n' % kv for kv in sorted(self.stats.items())]
            lines.append('seed=%d\n' % self.seed)
            tmp = '%s.tmp.%d' % (self.args.stats, os.getpid())
            try:
                with open(tmp, 'w') as f:
                    f.writelines(lines)
                os.replace(tmp, self.args.stats)
            except OSError as e:
                self.log('cannot write stats: %s' % e)
                return
            with self.lock:
                self.stats_written = version

    def stats_loop(self):
        while not self.stop.wait(1.0):
            self.write_stats()

    def decide(self, req):
        """The faults for one request: (kind or None, delay phase, delay s,
        fraction for a mid-body cut)."""
        with self.lock:
            r = [self.rng.random() for _ in range(6)]
            a = self.args
            if not self.faults_on or \
                    (self.methods is not None and req.method not in self.methods):
                return None, None, 0.0, 0.5
            kind = None
            if r[0] < a.error_rate and self.errors:
                kind = 'error_%d' % self.errors[int(r[1] * len(self.errors))]
            elif r[0] < a.error_rate + a.reset_rate and self.resets:
                kind = 'reset_' + self.resets[int(r[1] * len(self.resets))]
            if kind:
                if a.max_consecutive and \
                        self.consecutive >= a.max_consecutive:
                    kind = None
                    self.consecutive = 0
                else:
                    self.consecutive += 1
            else:
                self.consecutive = 0
            delay, phase = 0.0, None
            if r[2] < a.delay_rate:
                delay = a.delay_min + r[3] * (a.delay_max - a.delay_min)
                phase = 'request' if r[4] < 0.5 else 'response'
            return kind, phase, delay, r[5]

    # ------------------------------------------------------------ serving

    def serve(self):
        lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind(('127.0.0.1', self.args.listen_port))
        lsock.listen(128)
        port = lsock.getsockname()[1]
        if self.args.pid_file:
            atomic_write(self.args.pid_file, '%d\n' % os.getpid())
        if self.args.port_file:
            atomic_write(self.args.port_file, '%d\n' % port)
        self.log('listening on 127.0.0.1:%d%s -> %s:%d, seed %d, %s' % (
            port, ' (TLS)' if self.tls else '', self.target[0],
            self.target[1], self.seed,
            'faults on' if self.faults_on else 'pass-through'))
        try:
            sys.stdout.write('%d\n' % port)
            sys.stdout.flush()
        except OSError:
            pass
        self.write_stats(force=True)
        threading.Thread(target=self.stats_loop, daemon=True).start()
        lsock.setblocking(False)
        while not self.stop.is_set():
            try:
                ready, _, _ = select.select([lsock], [], [], 0.5)
            except InterruptedError:
                continue
            if not ready:
                continue
            try:
                csock, _ = lsock.accept()
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as e:
                self.log('accept: %s' % e)
                time.sleep(0.05)
                continue
            csock.setblocking(True)
            with self.lock:
                self.conn_ids += 1
                cid = self.conn_ids
            self.count('connections')
            threading.Thread(target=self.handle_connection,
                             args=(csock, cid), daemon=True).start()
        lsock.close()
        self.write_stats(force=True)
        self.log('exiting')

    def connect_upstream(self):
        try:
            s = socket.create_connection(self.target,
                                         timeout=self.args.timeout)
        except OSError as e:
            raise UpstreamFailed('connect to %s:%d: %s' % (
                self.target + (e,)))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s, Reader(s)

    def tls_accept(self, csock, cid):
        """The TLS server side of a new client connection, handshake done;
        None (the connection closed) when the handshake fails."""
        csock.settimeout(self.args.timeout)
        try:
            tsock = self.tls.wrap_socket(csock, server_side=True,
                                         do_handshake_on_connect=False)
        except (OSError, ValueError) as e:
            self.count('tls_handshake_errors')
            self.log('conn %d: TLS: %s' % (cid, e))
            close(csock)
            return None
        try:
            tsock.do_handshake()
        except (OSError, ValueError) as e:
            self.count('tls_handshake_errors')
            self.log('conn %d: TLS handshake failed: %s' % (cid, e))
            close(tsock)
            return None
        self.count('tls_handshakes')
        return tsock

    def handle_connection(self, csock, cid):
        csock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls is not None:
            csock = self.tls_accept(csock, cid)
            if csock is None:
                return
        creader = Reader(csock)
        up = [None, None]  # upstream socket, reader (kept across requests)
        try:
            while not self.stop.is_set():
                csock.settimeout(self.args.idle_timeout)
                try:
                    head = creader.read_head()
                except (PeerClosed, socket.timeout, ConnectionError):
                    return
                csock.settimeout(self.args.timeout)
                try:
                    req = Request(head)
                    req.content_length()
                except ValueError as e:
                    self.log('conn %d: bad request: %s' % (cid, e))
                    self.send_simple(csock, 400, 'BadRequest', str(e), None,
                                     keep_alive=False)
                    return
                if not self.handle_request(csock, creader, req, cid, up):
                    return
        except InjectedReset:
            reset(csock)
            csock = None
        except (PeerClosed, ConnectionError, socket.timeout, OSError) as e:
            self.count('client_errors')
            self.log('conn %d: client connection: %s' % (
                cid, e.__class__.__name__ if isinstance(e, PeerClosed)
                else e))
        except Exception as e:  # never let a thread die silently
            self.log('conn %d: internal error: %r' % (cid, e))
        finally:
            close(up[0])
            if csock is not None:
                lingering_close(csock)

    def handle_request(self, csock, creader, req, cid, up):
        """Serves one request; returns whether the client connection may
        carry another one."""
        with self.lock:
            self.stats['requests'] += 1
            self.stats_version += 1
            rid = self.stats['requests']
        kind, phase, delay, frac = self.decide(req)
        what = '#%d conn %d %s %s' % (rid, cid, req.method, req.target[:200])

        if delay and phase == 'request':
            self.count('delay')
            self.log('%s: delay %.2fs before forwarding' % (what, delay))
            time.sleep(delay)

        if kind in ('error_500', 'error_503'):
            code = int(kind[-3:])
            self.count(kind)
            self.count('faults')
            keep = req.keep_alive
            if req.has_body():
                if req.expect_continue:
                    keep = False  # the client has not sent its body
                else:
                    self.relay_request_body(creader, None, req)
            self.log('%s: injected %d without forwarding' % (what, code))
            if code == 503:
                self.send_simple(csock, 503, 'SlowDown',
                                 'Please reduce your request rate.', req,
                                 keep)
            else:
                self.send_simple(csock, 500, 'InternalError',
                                 'We encountered an internal error. '
                                 'Please try again.', req, keep)
            return keep

        if kind == 'reset_before':
            self.count(kind)
            self.count('faults')
            self.log('%s: reset before forwarding' % what)
            raise InjectedReset()

        # ---- forward the request
        relayed = [False]  # whether anything of the response reached the
        # client (after that, an upstream failure can only close it)
        try:
            resp = self.forward(csock, creader, req, up, relayed)
        except UpstreamFailed as e:
            close(up[0])
            up[0] = up[1] = None
            self.count('upstream_errors')
            self.log('%s: upstream failed: %s' % (what, e))
            if relayed[0]:
                return False
            self.send_simple(csock, 502, 'BadGateway', 'faultproxy: %s' % e,
                             req, keep_alive=False)
            return False
        self.count('forwarded')

        if delay and phase == 'response':
            self.count('delay')
            self.log('%s: delay %.2fs before relaying the response'
                     % (what, delay))
            time.sleep(delay)

        if kind == 'reset_mid_body' and not resp.has_body():
            kind = 'reset_after_request'
            self.log('%s: no response body to cut: resetting after the '
                     'request instead' % what)
        if kind == 'reset_after_request':
            self.count(kind)
            self.count('faults')
            self.log('%s: reset after forwarding (upstream answered %d)'
                     % (what, resp.status))
            close(up[0])
            up[0] = up[1] = None
            raise InjectedReset()

        self.send_client(csock, resp.raw)
        try:
            done, sent = self.relay_body(
                up[1], csock, resp.framing, resp.content_length(),
                frac if kind == 'reset_mid_body' else None,
                'bytes_to_client')
        except UpstreamFailed as e:
            # upstream broke mid-body: the client gets a short read
            close(up[0])
            up[0] = up[1] = None
            self.count('upstream_errors')
            self.log('%s: upstream failed mid-body: %s' % (what, e))
            return False
        if not done:  # the mid-body cut
            self.count('reset_mid_body')
            self.count('faults')
            self.log('%s: reset after %d bytes of the response body '
                     '(status %d, %s)' % (what, sent, resp.status,
                                          resp.framing))
            close(up[0])
            up[0] = up[1] = None
            raise InjectedReset()
        self.count('responses')
        if not resp.keep_alive or not req.keep_alive or up[1].buf:
            close(up[0])
            up[0] = up[1] = None
        return req.keep_alive and resp.keep_alive

    def send_client(self, csock, data):
        csock.sendall(data)
        self.count('bytes_to_client', len(data))

    def send_simple(self, csock, code, s3code, message, req, keep_alive):
        reason = {400: 'Bad Request', 500: 'Internal Server Error',
                  502: 'Bad Gateway', 503: 'Service Unavailable'}[code]
        with self.lock:
            reqid = 'faultproxy%08d' % self.stats['requests']
        resource = req.target.split('?')[0] if req else '/'
        body = ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>%s'
                '</Code><Message>%s</Message><Resource>%s</Resource>'
                '<RequestId>%s</RequestId></Error>' % (
                    s3code, escape(message), escape(resource),
                    reqid)).encode()
        head = ('HTTP/1.1 %d %s\r\nContent-Type: application/xml\r\n'
                'Content-Length: %d\r\nx-amz-request-id: %s\r\n'
                'Date: %s\r\nServer: faultproxy\r\n%s\r\n' % (
                    code, reason, len(body), reqid,
                    time.strftime('%a, %d %b %Y %H:%M:%S GMT',
                                  time.gmtime()),
                    '' if keep_alive else 'Connection: close\r\n')).encode()
        if req is not None and req.method == 'HEAD':
            body = b''
        self.send_client(csock, head + body)

    def upstream_for_request(self, up):
        """A connection to the target: the kept one if still usable."""
        if up[0] is not None:
            try:
                stale = bool(select.select([up[0]], [], [], 0)[0]) or \
                    bool(up[1].buf)
            except (OSError, ValueError):
                stale = True
            if not stale:
                return False
            close(up[0])
        up[0], up[1] = self.connect_upstream()
        return True

    def forward(self, csock, creader, req, up, relayed):
        """Sends req (head and body) upstream; returns the final response
        head (interim 1xx ones are relayed to the client).  A request
        without a body that finds its kept upstream connection closed by
        the server is sent once more on a new one."""
        fresh = self.upstream_for_request(up)
        if fresh or req.has_body():
            return self.forward_once(csock, creader, req, up, relayed, fresh)
        try:
            return self.forward_once(csock, creader, req, up, relayed, fresh)
        except UpstreamFailed as e:
            if relayed[0] or 'before a response' not in str(e):
                raise
        close(up[0])
        up[0], up[1] = self.connect_upstream()
        return self.forward_once(csock, creader, req, up, relayed, True)

    def forward_once(self, csock, creader, req, up, relayed, fresh):
        try:
            up[0].sendall(req.raw)
        except OSError as e:
            if fresh:
                raise UpstreamFailed('sending the request: %s' % e)
            # the kept connection died meanwhile: one new try
            close(up[0])
            up[0], up[1] = self.connect_upstream()
            try:
                up[0].sendall(req.raw)
            except OSError as e2:
                raise UpstreamFailed('sending the request: %s' % e2)
        self.count('bytes_to_upstream', len(req.raw))

        resp = None
        if req.has_body():
            if req.expect_continue:
                # wait (a while) for 100 Continue or an early final answer
                try:
                    r, _, _ = select.select([up[0]], [], [],
                                            0 if up[1].buf else 10)
                except (OSError, ValueError) as e:
                    raise UpstreamFailed(str(e))
                if r or up[1].buf:
                    resp = self.read_response(up, req)
                    if resp.status == 100:
                        self.send_client(csock, resp.raw)
                        relayed[0] = True
                        resp = None
                    else:
                        # final answer without the body: the client will
                        # not send it; this connection cannot go on
                        req.keep_alive = False
                        return resp
            try:
                self.relay_request_body(creader, up[0], req)
            except UpstreamFailed:
                # it may have answered early (e.g. 403) and closed
                try:
                    resp = self.read_response(up, req)
                except (UpstreamFailed, OSError):
                    raise UpstreamFailed('upstream closed during the '
                                         'request body')
                req.keep_alive = False
                return resp
        while True:
            resp = self.read_response(up, req)
            if resp.status >= 200 or resp.status == 101:
                return resp
            # interim response: relay it, the final one follows
            self.send_client(csock, resp.raw)
            relayed[0] = True

    def read_response(self, up, req):
        try:
            head = up[1].read_head()
        except PeerClosed:
            raise UpstreamFailed('connection closed before a response')
        except (socket.timeout, OSError, ValueError) as e:
            raise UpstreamFailed('reading the response: %s' % e)
        return Response(head, req)

    def relay_request_body(self, creader, usock, req):
        """Client -> upstream (or nowhere when usock is None)."""
        framing = 'chunked' if req.chunked() else 'length'
        self.relay_body(creader, usock, framing, req.content_length(), None,
                        'bytes_to_upstream', upstream_is_dst=True)

    def relay_body(self, src, dst, framing, length, cut, counter,
                   upstream_is_dst=False):
        """Copies one message body from src (a Reader) to dst (a socket, or
        None to discard); returns (complete, wire bytes sent).  With cut (a
        fraction in [0, 1)), stops early, never sending the whole body:
        after that share of a Content-Length body, inside the first chunk
        of a chunked one, or inside the first read of a close-delimited
        one.  Failures on the upstream side raise UpstreamFailed, those on
        the client side the socket's exceptions (or PeerClosed)."""
        sent = [0]
        limit = None
        if cut is not None and framing == 'length':
            limit = min(length - 1, int(cut * length))

        def get(fn, *a):
            try:
                return fn(*a)
            except (OSError, PeerClosed) as e:
                if upstream_is_dst:
                    raise
                raise UpstreamFailed('reading the body: %s' % (
                    e.__class__.__name__ if isinstance(e, PeerClosed)
                    else e))

        def send(data):
            if limit is not None and sent[0] + len(data) > limit:
                put(data[:limit - sent[0]])
                return False
            put(data)
            return True

        def put(data):
            if not data:
                return
            sent[0] += len(data)
            if dst is None:
                return
            try:
                dst.sendall(data)
            except OSError as e:
                if upstream_is_dst:
                    raise UpstreamFailed('sending the body: %s' % e)
                raise
            self.count(counter, len(data))

        if framing == 'none':
            return True, 0
        if framing == 'length':
            n = length or 0
            while n > 0:
                d = get(src.read_some, min(n, BUF))
                n -= len(d)
                if not send(d):
                    return False, sent[0]
            return True, sent[0]
        if framing == 'close':
            while True:
                try:
                    d = src.read_some(BUF)
                except PeerClosed:
                    return cut is None, sent[0]
                except OSError as e:
                    raise UpstreamFailed('reading the body: %s' % e)
                if cut is not None and limit is None:
                    limit = int(cut * len(d))
                if not send(d):
                    return False, sent[0]
        # chunked
        while True:
            line = get(src.readline)
            try:
                size = int(line.split(b';')[0].strip(), 16)
            except ValueError:
                if upstream_is_dst:
                    raise ValueError('bad chunk size line %r' % line[:80])
                raise UpstreamFailed('bad chunk size line %r' % line[:80])
            if size == 0:
                trailer = [line]
                while True:
                    t = get(src.readline)
                    trailer.append(t)
                    if t in (b'\r\n', b'\n'):
                        break
                if cut is not None:
                    return False, sent[0]  # never the terminating chunk
                send(b''.join(trailer))
                return True, sent[0]
            if cut is not None and limit is None:
                limit = sent[0] + len(line) + int(cut * size)
            if not send(line):
                return False, sent[0]
            n = size
            while n > 0:
                d = get(src.read_some, min(n, BUF))
                n -= len(d)
                if not send(d):
                    return False, sent[0]
            if not send(get(src.readline)):  # the CRLF after the data
                return False, sent[0]


def atomic_write(path, text):
    tmp = '%s.tmp.%d' % (path, os.getpid())
    with open(tmp, 'w') as f:
        f.write(text)
    os.replace(tmp, path)


def rate(s):
    v = float(s)
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError('a rate is between 0 and 1')
    return v


def main():
    p = argparse.ArgumentParser(
        description='Fault-injecting HTTP/1.1 proxy for the S3 tests.')
    p.add_argument('--target', required=True, help='host:port to forward to')
    p.add_argument('--listen-port', type=int, default=0)
    p.add_argument('--port-file')
    p.add_argument('--pid-file')
    p.add_argument('--seed', type=int)
    p.add_argument('--error-rate', type=rate, default=0.10)
    p.add_argument('--reset-rate', type=rate, default=0.05)
    p.add_argument('--delay-rate', type=rate, default=0.05)
    p.add_argument('--delay-min', type=float, default=0.2)
    p.add_argument('--delay-max', type=float, default=1.0)
    p.add_argument('--errors', default='500,503')
    p.add_argument('--resets', default=','.join(RESETS))
    p.add_argument('--methods')
    p.add_argument('--max-consecutive', type=int, default=0)
    p.add_argument('--passthrough', action='store_true')
    p.add_argument('--stats')
    p.add_argument('--log')
    p.add_argument('--timeout', type=float, default=120.0)
    p.add_argument('--idle-timeout', type=float, default=600.0)
    p.add_argument('--tls-cert')
    p.add_argument('--tls-key')
    args = p.parse_args()
    if bool(args.tls_cert) != bool(args.tls_key):
        p.error('--tls-cert and --tls-key go together')
    if args.error_rate + args.reset_rate > 1.0:
        p.error('--error-rate + --reset-rate must not exceed 1')
    if args.delay_max < args.delay_min:
        p.error('--delay-max must not be below --delay-min')

    proxy = Proxy(args)

    def on_stop(signum, frame):
        proxy.stop.set()

    # signal handlers run in the main thread between any two bytecodes:
    # they take no lock and write nothing themselves
    def in_thread(fn, *a):
        threading.Thread(target=fn, args=a, daemon=True).start()

    def on_faults(on):
        def handler(signum, frame):
            proxy.faults_on = on
            in_thread(proxy.log, 'faults %s (signal)' % ('on' if on else 'off'))
        return handler

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGUSR1, on_faults(False))
    signal.signal(signal.SIGUSR2, on_faults(True))
    signal.signal(signal.SIGHUP, lambda s, f: in_thread(proxy.write_stats,
                                                        True))
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    try:
        proxy.serve()
    except OSError as e:
        sys.stderr.write('faultproxy: %s\n' % e)
        sys.exit(1)
    # handler threads are daemons: the process ends with their sockets
    sys.exit(0)


if __name__ == '__main__':
    main()
