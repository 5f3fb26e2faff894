/*  zgossip_peer: CZMQ 4.2.1's zgossip actor behind a line protocol on stdin/stdout.

    The Rust integration tests drive this program and the Rust `zgossip node` the same way, so a
    real CZMQ node can take any place in a test network.

    Usage:  zgossip_peer [--name NAME] [--verbose] [--bind EP]... [--connect EP]...
                         [--publish KEY=VALUE]...
    Build:  gcc -Wall -Wextra -o zgossip_peer zgossip_peer.c $(pkg-config --cflags --libs libczmq)

    The options other than --name are applied in the order given, once the actor is running;
    --name (the actor's argument, CZMQ's log prefix) counts wherever it stands.

    stdin   One command per line. The line is split on single spaces and the words go to the actor
            as one multipart string message: "PUBLISH k v" -> "PUBLISH" "k" "v". Empty lines are
            skipped; a trailing "\r" is dropped. "ANNOUNCE ep svc" is sent as "PUBLISH ep svc"
            (the Rust node's alias). Verbs that CZMQ would crash on for lack of arguments (see
            ARITIES) are answered with "ERROR <verb> needs N argument(s)" and not sent. Anything
            else, unknown verbs included, goes to the actor as it is.
    $TERM   Stops the peer: the replies to every command sent before it are printed first, then
            the actor is destroyed and the program exits 0.
    EOF     Does the same as $TERM (a last line without its newline still counts). The Rust node
            keeps running on EOF; this peer stops, so a test process that dies without cleaning
            up never leaves a CZMQ node behind.
    stdout  Every message the actor sends on its pipe, its frames joined by single spaces, one line
            each, flushed at once; plus the ERROR lines above. Nothing else.
    stderr  Diagnostics and CZMQ's own log (which zgossip would otherwise write to stdout).

    What CZMQ 4.2.1's zgossip actor sends back on its pipe, seen by experiment with this program
    (libczmq4 4.2.1, libzmq5 4.3.4, Debian 12):
    - BIND ep      nothing, whether or not the bind worked; a failure shows only as the log line
                   "W: ... could not bind to ep" on stderr.
    - PORT         two frames, "PORT" and the number: printed as "PORT 49152". The number is the
                   result of the latest BIND: the tcp port, 0 before any BIND and after binding an
                   ipc:// endpoint, -1 after a failed BIND. (If a bare number ever came back, it
                   would be printed as "PORT n" too, so both kinds of peer look alike.)
    - STATUS       two frames, "STATUS" and the number of tuples held (one per key): "STATUS 2".
    - PUBLISH k v  "DELIVER k v" to the publishing application itself when the tuple is new to
                   this node (new key, or a new value for a known key); nothing for a repeat.
    - from peers   "DELIVER k v" once per new tuple, under the same rule.
    - SET p v      nothing (SET with no value is accepted by CZMQ, but refused here).
    - unknown verb (e.g. "FOO", and "UNPUBLISH": Debian's build has no draft API) nothing; CZMQ
                   logs "E: ... unknown zgossip method 'FOO'" and carries on.
    - too few words CONNECT/PUBLISH/SET/LOAD/SAVE abort or segfault the process; BIND alone
                   tries to bind "(null)". Hence the ERROR replies above.
*/

#include <czmq.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define LINE_MAX_BYTES 65536

//  On $TERM or EOF, how long to wait for the replies to earlier commands.
#define DRAIN_TIMEOUT_MSEC 5000

//  How many words after the verb CZMQ 4.2.1's zgossip needs; given fewer it crashes (see above),
//  so this peer answers with an ERROR line instead. Verbs not listed go to the actor as they are.
typedef struct {
    const char *verb;
    size_t words;
} arity_t;

static const arity_t ARITIES [] = {
    { "BIND", 1 }, { "CONNECT", 1 }, { "PUBLISH", 2 }, { "ANNOUNCE", 2 },
    { "SET", 2 }, { "LOAD", 1 }, { "SAVE", 1 }, { NULL, 0 }
};

static size_t
s_arity (const char *verb)
{
    for (const arity_t *arity = ARITIES; arity->verb; arity++)
        if (streq (arity->verb, verb))
            return arity->words;
    return 0;
}

//  Everything the event handlers share.
typedef struct {
    zactor_t *actor;
    char pending [LINE_MAX_BYTES + 1];  //  stdin bytes that do not yet make a whole line
    size_t pending_len;
    bool skipping;                      //  inside an over-long line, dropping it
    size_t status_asked;                //  STATUS commands sent to the actor
    size_t status_answered;             //  STATUS replies printed
    int exit_code;
} peer_t;

//  Writes one line to stdout and flushes it. Returns -1 when stdout is gone.
static int
s_emit (const char *line)
{
    if (fputs (line, stdout) == EOF || fputc ('\n', stdout) == EOF || fflush (stdout) == EOF)
        return -1;
    return 0;
}

//  Sends one command line to the actor. Returns -1 when stdout is gone.
static int
s_handle_line (peer_t *peer, char *line)
{
    size_t len = strlen (line);
    if (len > 0 && line [len - 1] == '\r')
        line [--len] = 0;
    if (len == 0)
        return 0;

    zmsg_t *msg = zmsg_new ();
    char *word = line;
    while (true) {
        char *space = strchr (word, ' ');
        if (space)
            *space = 0;
        zmsg_addstr (msg, word);
        if (!space)
            break;
        word = space + 1;
    }
    char *verb = zmsg_popstr (msg);
    size_t wanted = s_arity (verb);
    if (zmsg_size (msg) < wanted) {
        char reply [300];
        snprintf (reply, sizeof reply, "ERROR %.200s needs %zu argument%s",
                  verb, wanted, wanted == 1? "": "s");
        zstr_free (&verb);
        zmsg_destroy (&msg);
        return s_emit (reply);
    }
    zmsg_pushstr (msg, streq (verb, "ANNOUNCE")? "PUBLISH": verb);
    if (streq (verb, "STATUS"))
        peer->status_asked++;
    //  A loaded file or a SET may turn server/background off, and then zgossip points CZMQ's
    //  log back at stdout; turn it on again straight away.
    bool keep_background = streq (verb, "LOAD") || streq (verb, "SET");
    zstr_free (&verb);
    zactor_send (peer->actor, &msg);
    if (keep_background)
        zstr_sendx (peer->actor, "SET", "server/background", "1", NULL);
    return 0;
}

//  Prints one message from the actor as a line. Returns -1 when stdout is gone. Sets *last_status
//  when the message is a STATUS reply that no STATUS command from stdin asked for.
static int
s_handle_actor (peer_t *peer, bool *last_status)
{
    zmsg_t *msg = zactor_recv (peer->actor);
    if (!msg)
        return 0;
    zframe_t *first = zmsg_first (msg);
    if (zframe_streq (first, "STATUS")) {
        if (peer->status_answered == peer->status_asked) {
            //  The reply to s_stop's own STATUS: every earlier reply has been printed.
            if (last_status)
                *last_status = true;
            zmsg_destroy (&msg);
            return 0;
        }
        peer->status_answered++;
    }
    zchunk_t *line = zchunk_new (NULL, 0);
    //  A lone number would be an answer to PORT (see the note at the top).
    if (zmsg_size (msg) == 1 && zframe_size (first) > 0
    &&  strspn ((char *) zframe_data (first), "-0123456789") == zframe_size (first))
        zchunk_extend (line, "PORT ", 5);
    for (zframe_t *frame = first; frame; frame = zmsg_next (msg)) {
        if (frame != first)
            zchunk_extend (line, " ", 1);
        zchunk_extend (line, zframe_data (frame), zframe_size (frame));
    }
    zchunk_extend (line, "", 1);
    int rc = s_emit ((char *) zchunk_data (line));
    zchunk_destroy (&line);
    zmsg_destroy (&msg);
    return rc;
}

//  Prints the replies to every command sent so far, then returns. The actor works through its
//  pipe in order, so once it answers one more STATUS, everything before has been answered.
static void
s_stop (peer_t *peer)
{
    zstr_send (peer->actor, "STATUS");
    zpoller_t *poller = zpoller_new (peer->actor, NULL);
    int64_t deadline = zclock_mono () + DRAIN_TIMEOUT_MSEC;
    bool done = false;
    while (!done) {
        int64_t left = deadline - zclock_mono ();
        if (left <= 0 || !zpoller_wait (poller, (int) left)) {
            fprintf (stderr, "zgossip_peer: gave up waiting for the actor's last replies\n");
            break;
        }
        if (s_handle_actor (peer, &done) == -1)
            break;
    }
    zpoller_destroy (&poller);
}

//  zloop handler: the actor has something to say. Returning -1 ends the loop.
static int
s_on_actor (zloop_t *loop, zsock_t *reader, void *arg)
{
    (void) loop;
    (void) reader;
    return s_handle_actor ((peer_t *) arg, NULL);
}

//  zloop handler: stdin is readable. Runs every complete line; ends the loop on $TERM, EOF and
//  errors.
static int
s_on_stdin (zloop_t *loop, zmq_pollitem_t *item, void *arg)
{
    (void) loop;
    peer_t *peer = (peer_t *) arg;
    ssize_t got = read (item->fd, peer->pending + peer->pending_len,
                        LINE_MAX_BYTES - peer->pending_len);
    if (got == -1 && errno == EINTR)
        return 0;
    if (got == -1) {
        fprintf (stderr, "zgossip_peer: reading stdin: %s\n", strerror (errno));
        peer->exit_code = 1;
        return -1;
    }
    if (got == 0) {
        //  EOF: a last line without its newline still counts.
        peer->pending [peer->pending_len] = 0;
        if (peer->pending_len > 0 && !peer->skipping && !streq (peer->pending, "$TERM"))
            s_handle_line (peer, peer->pending);
        return -1;
    }
    peer->pending_len += (size_t) got;

    int rc = 0;
    size_t start = 0;
    for (size_t at = 0; at < peer->pending_len && rc == 0; at++) {
        if (peer->pending [at] != '\n')
            continue;
        peer->pending [at] = 0;
        char *line = peer->pending + start;
        start = at + 1;
        if (peer->skipping)
            peer->skipping = false;
        else
        if (streq (line, "$TERM") || streq (line, "$TERM\r"))
            rc = -1;
        else
            rc = s_handle_line (peer, line);
    }
    memmove (peer->pending, peer->pending + start, peer->pending_len - start);
    peer->pending_len -= start;
    if (peer->pending_len == LINE_MAX_BYTES) {
        fprintf (stderr, "zgossip_peer: dropping a line longer than %d bytes\n", LINE_MAX_BYTES);
        peer->pending_len = 0;
        peer->skipping = true;
    }
    return rc;
}

static void
s_usage (void)
{
    fprintf (stderr, "usage: zgossip_peer [--name NAME] [--verbose] [--bind EP]... "
                     "[--connect EP]... [--publish KEY=VALUE]...\n");
}

//  Checks the options; returns 0 if they are fine, else prints why and returns -1.
static int
s_check_options (int argc, char *argv [])
{
    for (int arg = 1; arg < argc; arg++) {
        const char *opt = argv [arg];
        if (streq (opt, "--verbose"))
            continue;
        if (streq (opt, "--name") || streq (opt, "--bind") || streq (opt, "--connect")
        ||  streq (opt, "--publish")) {
            if (arg + 1 >= argc) {
                fprintf (stderr, "zgossip_peer: %s needs a value\n", opt);
                s_usage ();
                return -1;
            }
            if (streq (opt, "--publish") && !strchr (argv [arg + 1], '=')) {
                fprintf (stderr, "zgossip_peer: --publish wants KEY=VALUE, got '%s'\n",
                         argv [arg + 1]);
                return -1;
            }
            arg++;
            continue;
        }
        fprintf (stderr, "zgossip_peer: unknown option '%s'\n", opt);
        s_usage ();
        return -1;
    }
    return 0;
}

//  Sends the commands the options stand for, in order.
static void
s_apply_options (zactor_t *actor, int argc, char *argv [])
{
    for (int arg = 1; arg < argc; arg++) {
        const char *opt = argv [arg];
        if (streq (opt, "--verbose"))
            zstr_send (actor, "VERBOSE");
        else
        if (streq (opt, "--bind"))
            zstr_sendx (actor, "BIND", argv [++arg], NULL);
        else
        if (streq (opt, "--connect"))
            zstr_sendx (actor, "CONNECT", argv [++arg], NULL);
        else
        if (streq (opt, "--publish")) {
            char *pair = strdup (argv [++arg]);
            char *equals = strchr (pair, '=');
            *equals = 0;
            zstr_sendx (actor, "PUBLISH", pair, equals + 1, NULL);
            free (pair);
        }
        else
        if (streq (opt, "--name"))
            arg++;
    }
}

int
main (int argc, char *argv [])
{
    //  If the harness goes away, writes fail and we exit, rather than die of SIGPIPE.
    signal (SIGPIPE, SIG_IGN);
    if (s_check_options (argc, argv) == -1)
        return 2;
    const char *name = "zgossip-peer";
    for (int arg = 1; arg + 1 < argc; arg++)
        if (streq (argv [arg], "--name"))
            name = argv [arg + 1];

    zactor_t *actor = zactor_new (zgossip, (void *) name);
    if (!actor) {
        fprintf (stderr, "zgossip_peer: could not start the zgossip actor\n");
        return 1;
    }
    //  CZMQ logs to stdout by default, and zgossip points the log back at stdout on every SET
    //  unless server/background is 1. Set it before anything else reaches the actor.
    zstr_sendx (actor, "SET", "server/background", "1", NULL);
    zsys_set_logstream (stderr);
    s_apply_options (actor, argc, argv);

    //  Static: the line buffer is too big to want on the stack.
    static peer_t peer;
    peer.actor = actor;
    zloop_t *loop = zloop_new ();
    zloop_reader (loop, zactor_sock (actor), s_on_actor, &peer);
    zmq_pollitem_t stdin_item = { NULL, STDIN_FILENO, ZMQ_POLLIN, 0 };
    zloop_poller (loop, &stdin_item, s_on_stdin, &peer);
    //  A closed pipe polls as POLLHUP, which zmq_poll reports as an error; zloop would then drop
    //  the poller without calling s_on_stdin, and the EOF would go unseen.
    zloop_poller_set_tolerant (loop, &stdin_item);
    zloop_start (loop);
    zloop_destroy (&loop);

    if (!zsys_interrupted)
        s_stop (&peer);
    zactor_destroy (&actor);
    return peer.exit_code;
}
