/*  czmq_bench: the `zgossip bench` workloads, run on CZMQ's own zgossip actors in one process,
    so the Rust node's numbers can be set beside CZMQ's from the same run on the same machine.

    Usage:  czmq_bench chain --nodes N --tuples T [--transport tcp|ipc|inproc] [--timeout-s X]
            czmq_bench mesh --nodes N --degree D [--services S] [--seed X]
                            [--transport tcp|ipc|inproc] [--timeout-s X]
    Build:  gcc -O2 -Wall -Wextra -o czmq_bench czmq_bench.c $(pkg-config --cflags --libs libczmq)

    chain   N actors; actor i-1 CONNECTs to actor i; T tuples ("tcp://bench/<i>" = "svc") are
            PUBLISHed at actor 0; the clock runs from the first PUBLISH until the last actor has
            DELIVERed all T (the same moment its STATUS would say T).
            Prints: seconds=<f> tuples_per_s=<f> publish_s=<f> peak_rss_mb=<f>
    mesh    N actors; each dials D random earlier actors, drawn with the same xorshift and seed
            as `zgossip bench mesh`, so both build the same graph; S services (default N, one per
            actor; otherwise on S random actors, drawn as the Rust bench draws them) are
            PUBLISHed; the clock runs until every actor has DELIVERed all S.
            Prints: seconds=<f> idle_kb_per_node=<f> links=<n> publish_s=<f> peak_rss_mb=<f>
            (no messages_per_node: CZMQ counts no messages.)

    Endpoints as the Rust bench binds them: tcp://127.0.0.1:* (the port read back with PORT),
    ipc:// paths in a fresh temporary directory, inproc://czb-<run>-<i>.

    What it takes to run CZMQ 4.2.1's zgossip this way, and why:
    - Every actor sends "DELIVER key value" on its pipe for each new tuple, and blocks when the
      pipe is full; a full pipe towards this program while this program blocks sending PUBLISH
      would deadlock. Pipes are made unbounded (zsys_set_pipehwm (0)) and this program drains
      every pipe while it waits. Counting the last actor's DELIVERs is how it knows.
    - The server forgets a client that has been silent for server/timeout (1 s by default), and
      CZMQ's client never pings; a PUBLISH from a forgotten client is answered INVALID and the
      tuple is lost. Sessions are silent from their HELLO until the first tuple comes by, so a
      run whose setup or spreading takes more than a second loses tuples and never finishes
      (the N=300 mesh, measured: 6 runs in 7). Every actor gets SET server/timeout 3600000
      (one hour) before it binds or connects. This only removes a failure; it does not make
      CZMQ faster.
    - Each actor is a thread with its own sockets, plus a zmonitor actor (another thread) per
      remote: the socket limit is lifted (zsys_set_max_sockets (0)) and so is the descriptor
      limit, as far as the hard limit allows.
    - CZMQ logs to stdout unless server/background is set; it is set first, and the log goes to
      stderr. stdout carries only the result line.
*/

#include <czmq.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

//  How long actors are left alone after connecting, before memory is measured and the clock
//  starts (the Rust bench waits until every link said HELLO, then 300 ms).
#define SETTLE_MSEC 500
//  Poll timeout while draining the pipes.
#define POLL_MSEC 10
//  Client sessions are kept this long (see the note above).
#ifndef SERVER_TIMEOUT
#define SERVER_TIMEOUT "3600000"
#endif
#define SERVICE "svc"

typedef enum { TRANSPORT_TCP, TRANSPORT_IPC, TRANSPORT_INPROC } transport_t;

typedef struct {
    bool mesh;
    int nodes;
    int tuples;
    int degree;
    int services;               //  0: one per node
    uint64_t seed;
    transport_t transport;
    int timeout_s;
} options_t;

typedef struct {
    int count;
    zactor_t **actors;
    char **endpoints;           //  what peers CONNECT to
    zpoller_t *poller;
    long *delivered;            //  DELIVERs seen per actor
    char ipc_dir [64];
} net_t;

//  The xorshift64 of src/bench.rs: same seed, same numbers.
static uint64_t s_rng;

static void
s_rng_seed (uint64_t seed)
{
    s_rng = seed? seed: 0x9e3779b97f4a7c15ULL;
}

static int
s_below (int n)
{
    s_rng ^= s_rng << 13;
    s_rng ^= s_rng >> 7;
    s_rng ^= s_rng << 17;
    return (int) (s_rng % (uint64_t) n);
}

//  Fills picked with min (want, n) distinct numbers below n, as XorShift::distinct_below does;
//  returns how many.
static int
s_distinct_below (int n, int want, int *picked)
{
    if (n <= want) {
        for (int i = 0; i < n; i++)
            picked [i] = i;
        return n;
    }
    int got = 0;
    while (got < want) {
        int candidate = s_below (n);
        bool seen = false;
        for (int i = 0; i < got; i++)
            if (picked [i] == candidate)
                seen = true;
        if (!seen)
            picked [got++] = candidate;
    }
    return got;
}

//  A field of /proc/self/status in kB (VmRSS, VmHWM), or 0.
static long
s_status_kb (const char *field)
{
    FILE *file = fopen ("/proc/self/status", "r");
    if (!file)
        return 0;
    char line [256];
    long kb = 0;
    size_t len = strlen (field);
    while (fgets (line, sizeof line, file))
        if (strncmp (line, field, len) == 0) {
            kb = atol (line + len);
            break;
        }
    fclose (file);
    return kb;
}

static double
s_seconds_since (int64_t start_usec)
{
    return (double) (zclock_usecs () - start_usec) / 1e6;
}

static void
s_usage (void)
{
    fprintf (stderr,
        "usage: czmq_bench chain --nodes N --tuples T [--transport tcp|ipc|inproc] [--timeout-s X]\n"
        "       czmq_bench mesh --nodes N --degree D [--services S] [--seed X]"
        " [--transport tcp|ipc|inproc] [--timeout-s X]\n");
}

static int
s_parse (int argc, char *argv [], options_t *options)
{
    if (argc < 2)
        return -1;
    memset (options, 0, sizeof *options);
    options->nodes = 3;
    options->tuples = 10000;
    options->degree = 2;
    options->seed = 1;
    options->transport = TRANSPORT_INPROC;
    options->timeout_s = 300;
    if (streq (argv [1], "mesh"))
        options->mesh = true;
    else
    if (!streq (argv [1], "chain"))
        return -1;
    for (int arg = 2; arg < argc; arg += 2) {
        const char *name = argv [arg];
        if (arg + 1 >= argc) {
            fprintf (stderr, "czmq_bench: %s needs a value\n", name);
            return -1;
        }
        const char *value = argv [arg + 1];
        if (streq (name, "--nodes"))
            options->nodes = atoi (value);
        else
        if (streq (name, "--tuples"))
            options->tuples = atoi (value);
        else
        if (streq (name, "--degree"))
            options->degree = atoi (value);
        else
        if (streq (name, "--services"))
            options->services = atoi (value);
        else
        if (streq (name, "--seed"))
            options->seed = strtoull (value, NULL, 10);
        else
        if (streq (name, "--timeout-s"))
            options->timeout_s = atoi (value);
        else
        if (streq (name, "--transport")) {
            if (streq (value, "tcp"))
                options->transport = TRANSPORT_TCP;
            else
            if (streq (value, "ipc"))
                options->transport = TRANSPORT_IPC;
            else
            if (streq (value, "inproc"))
                options->transport = TRANSPORT_INPROC;
            else
                return -1;
        }
        else {
            fprintf (stderr, "czmq_bench: unknown option '%s'\n", name);
            return -1;
        }
    }
    if (options->nodes < (options->mesh? 1: 2) || options->tuples < 1 || options->degree < 1
    ||  options->services < 0 || options->services > options->nodes || options->timeout_s < 1)
        return -1;
    return 0;
}

//  Lifts the descriptor limit to the hard limit: every socket has a signalling descriptor.
static void
s_raise_fd_limit (void)
{
    struct rlimit limit;
    if (getrlimit (RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
        limit.rlim_cur = limit.rlim_max;
        setrlimit (RLIMIT_NOFILE, &limit);
    }
}

//  Starts and binds count actors. Returns 0, or -1 if a bind failed.
static int
s_net_start (net_t *net, int count, transport_t transport)
{
    static int run = 0;
    run++;
    net->count = count;
    net->actors = (zactor_t **) calloc ((size_t) count, sizeof (zactor_t *));
    net->endpoints = (char **) calloc ((size_t) count, sizeof (char *));
    net->delivered = (long *) calloc ((size_t) count, sizeof (long));
    net->poller = zpoller_new (NULL);
    assert (net->actors && net->endpoints && net->delivered && net->poller);
    if (transport == TRANSPORT_IPC) {
        snprintf (net->ipc_dir, sizeof net->ipc_dir, "/tmp/czmq-bench-XXXXXX");
        if (!mkdtemp (net->ipc_dir)) {
            fprintf (stderr, "czmq_bench: mkdtemp: %s\n", strerror (errno));
            net->ipc_dir [0] = 0;
            return -1;
        }
    }
    for (int i = 0; i < count; i++) {
        char name [32];
        snprintf (name, sizeof name, "czb-%d", i);
        zactor_t *actor = zactor_new (zgossip, name);
        assert (actor);
        zstr_sendx (actor, "SET", "server/background", "1", NULL);
        zstr_sendx (actor, "SET", "server/timeout", SERVER_TIMEOUT, NULL);
        net->actors [i] = actor;
        zpoller_add (net->poller, actor);

        if (transport == TRANSPORT_TCP) {
            zstr_sendx (actor, "BIND", "tcp://127.0.0.1:*", NULL);
            zstr_send (actor, "PORT");
            char *command = NULL, *port = NULL;
            zstr_recvx (actor, &command, &port, NULL);
            int number = port? atoi (port): -1;
            zstr_free (&command);
            zstr_free (&port);
            if (number <= 0) {
                fprintf (stderr, "czmq_bench: actor %d could not bind tcp\n", i);
                return -1;
            }
            net->endpoints [i] = zsys_sprintf ("tcp://127.0.0.1:%d", number);
        }
        else {
            if (transport == TRANSPORT_IPC)
                net->endpoints [i] = zsys_sprintf ("ipc://%s/%d", net->ipc_dir, i);
            else
                net->endpoints [i] = zsys_sprintf ("inproc://czb-%d-%d", run, i);
            zstr_sendx (actor, "BIND", net->endpoints [i], NULL);
        }
    }
    zsys_set_logstream (stderr);
    return 0;
}

//  Asks every actor for STATUS and waits for each answer: every command sent before has been
//  carried out. DELIVERs that come first are counted.
static void
s_net_sync (net_t *net)
{
    for (int i = 0; i < net->count; i++) {
        zstr_send (net->actors [i], "STATUS");
        while (true) {
            zmsg_t *msg = zmsg_recv (net->actors [i]);
            if (!msg)
                return;
            bool status = zframe_streq (zmsg_first (msg), "STATUS");
            if (zframe_streq (zmsg_first (msg), "DELIVER"))
                net->delivered [i]++;
            zmsg_destroy (&msg);
            if (status)
                break;
        }
    }
}

//  Reads everything waiting on one actor's pipe without blocking, counting DELIVERs.
static void
s_drain (net_t *net, int i)
{
    zsock_t *pipe = zactor_sock (net->actors [i]);
    zsock_set_rcvtimeo (pipe, 0);
    while (true) {
        zframe_t *frame = zframe_recv (pipe);
        if (!frame)
            break;
        if (zframe_streq (frame, "DELIVER"))
            net->delivered [i]++;
        bool more = zframe_more (frame);
        zframe_destroy (&frame);
        while (more) {
            frame = zframe_recv (pipe);
            if (!frame)
                break;
            more = zframe_more (frame);
            zframe_destroy (&frame);
        }
    }
    zsock_set_rcvtimeo (pipe, -1);
}

//  Drains all pipes until every actor in [from, count) has DELIVERed want tuples, or the
//  deadline (usecs) passes. Returns how many of those actors are still short.
static int
s_wait_delivered (net_t *net, int from, long want, int64_t deadline)
{
    while (true) {
        int short_of = 0;
        for (int i = from; i < net->count; i++)
            if (net->delivered [i] < want)
                short_of++;
        if (short_of == 0 || zclock_usecs () > deadline)
            return short_of;
        void *ready = zpoller_wait (net->poller, POLL_MSEC);
        if (!ready && zpoller_terminated (net->poller))
            return short_of;
        for (int i = 0; ready && i < net->count; i++)
            if (ready == (void *) net->actors [i]) {
                s_drain (net, i);
                break;
            }
    }
}

static void
s_net_stop (net_t *net)
{
    //  Destroying hundreds of actors (and their monitors) one by one takes long and measures
    //  nothing; the process is about to exit.
    if (net->ipc_dir [0]) {
        for (int i = 0; i < net->count; i++)
            if (net->endpoints [i])
                unlink (net->endpoints [i] + strlen ("ipc://"));
        rmdir (net->ipc_dir);
    }
}

static int
s_chain (const options_t *options)
{
    net_t net;
    memset (&net, 0, sizeof net);
    if (s_net_start (&net, options->nodes, options->transport) == -1) {
        s_net_stop (&net);
        return 1;
    }
    for (int i = 1; i < net.count; i++)
        zstr_sendx (net.actors [i - 1], "CONNECT", net.endpoints [i], NULL);
    s_net_sync (&net);
    zclock_sleep (SETTLE_MSEC);
    fprintf (stderr, "czmq chain: %d actors linked; publishing %d tuples at the first\n",
             net.count, options->tuples);

    int64_t start = zclock_usecs ();
    for (int t = 0; t < options->tuples; t++) {
        char key [64];
        snprintf (key, sizeof key, "tcp://bench/%d", t);
        zstr_sendx (net.actors [0], "PUBLISH", key, SERVICE, NULL);
    }
    double publish_s = s_seconds_since (start);
    int64_t deadline = start + (int64_t) options->timeout_s * 1000000;
    int short_of = s_wait_delivered (&net, net.count - 1, options->tuples, deadline);
    double seconds = s_seconds_since (start);
    int rc = 0;
    if (short_of) {
        fprintf (stderr, "czmq_bench: the last actor has %ld of %d tuples after %d s\n",
                 net.delivered [net.count - 1], options->tuples, options->timeout_s);
        rc = 1;
    }
    else
        printf ("seconds=%.4f tuples_per_s=%.0f publish_s=%.4f peak_rss_mb=%.1f\n",
                seconds, options->tuples / seconds, publish_s, s_status_kb ("VmHWM:") / 1024.0);
    fflush (stdout);
    s_net_stop (&net);
    return rc;
}

static int
s_mesh (const options_t *options)
{
    int count = options->nodes;
    int services = options->services? options->services: count;
    int *picked = (int *) calloc ((size_t) (count > options->degree? count: options->degree),
                                  sizeof (int));
    assert (picked);
    s_rng_seed (options->seed);

    long rss_before = s_status_kb ("VmRSS:");
    net_t net;
    memset (&net, 0, sizeof net);
    if (s_net_start (&net, count, options->transport) == -1) {
        s_net_stop (&net);
        return 1;
    }
    int links = 0;
    for (int i = 0; i < count; i++) {
        int got = s_distinct_below (i, options->degree, picked);
        for (int p = 0; p < got; p++) {
            zstr_sendx (net.actors [i], "CONNECT", net.endpoints [picked [p]], NULL);
            links++;
        }
    }
    s_net_sync (&net);
    zclock_sleep (SETTLE_MSEC);
    long rss_idle = s_status_kb ("VmRSS:");
    double idle_kb = (double) (rss_idle - rss_before) / count;
    fprintf (stderr, "czmq mesh: %d actors, %d links; %.1f KB per idle actor; announcing %d services\n",
             count, links, idle_kb, services);

    int announcers = services == count? count: s_distinct_below (count, services, picked);
    if (services == count)
        for (int i = 0; i < count; i++)
            picked [i] = i;
    int64_t start = zclock_usecs ();
    for (int a = 0; a < announcers; a++) {
        char key [64];
        snprintf (key, sizeof key, "tcp://bench/%d", picked [a]);
        zstr_sendx (net.actors [picked [a]], "PUBLISH", key, SERVICE, NULL);
    }
    double publish_s = s_seconds_since (start);
    int64_t deadline = start + (int64_t) options->timeout_s * 1000000;
    int short_of = s_wait_delivered (&net, 0, services, deadline);
    double seconds = s_seconds_since (start);
    int rc = 0;
    if (short_of) {
        fprintf (stderr, "czmq_bench: %d of %d actors short of %d services after %d s\n",
                 short_of, count, services, options->timeout_s);
        rc = 1;
    }
    else
        printf ("seconds=%.4f idle_kb_per_node=%.1f links=%d publish_s=%.4f peak_rss_mb=%.1f\n",
                seconds, idle_kb, links, publish_s, s_status_kb ("VmHWM:") / 1024.0);
    fflush (stdout);
    s_net_stop (&net);
    free (picked);
    return rc;
}

int
main (int argc, char *argv [])
{
    options_t options;
    if (s_parse (argc, argv, &options) == -1) {
        s_usage ();
        return 2;
    }
    s_raise_fd_limit ();
    zsys_init ();
    zsys_set_max_sockets (0);
    zsys_set_pipehwm (0);
    zsys_set_logstream (stderr);
    int rc = options.mesh? s_mesh (&options): s_chain (&options);
    //  Leave without tearing hundreds of actors down (see s_net_stop).
    _exit (rc);
}
