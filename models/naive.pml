/*
 * The naive Redis lock that leaderd replaces, and why it is not safe.
 *
 * What it models. Two clients, A and B, and real time in whole ticks. The
 * naive design, as it is usually written after the old Redis SETNX page:
 *
 *   acquire  SETNX lock <my clock + T + 1>; if that fails, GET lock, and if
 *            the timestamp in it is in the past *by my clock*, take it over
 *            with GETSET lock <my clock + T + 1>, keeping it only if the old
 *            value GETSET returned is in the past too;
 *   holding  a client holds while its own clock is before the timestamp it
 *            wrote (the most charitable reading: it stops by itself);
 *   release  GET lock, and DEL it if it still holds my timestamp;
 *   HA       the same lock on three independent nodes (SET NX PX T on each,
 *            one node after the other), held when a majority of the writes
 *            succeeded, for T from the moment the client knows it.
 *
 * Every Redis command is one atomic step; between two commands of a client,
 * anything may happen (the other client, time passing: a slow client or a
 * pause). Clocks are wall clocks: each client's clock is real time plus a
 * fixed offset of 0 to 2 ticks (the design compares timestamps written by
 * different hosts, so offsets matter).
 *
 * Four checks, one per flaw (-D selects; each must FAIL, see
 * scripts/model-check, and the trails are in README.md, "Proof"):
 *   RACE     never two holders at once. The lock is left by a client that
 *            crashed; A and B both read it as expired and both take it over
 *            with GETSET (the common form that does not look at the value
 *            GETSET returns). Clocks agree.
 *   SKEW     never two holders at once, with the careful form (the value
 *            GETSET returns must be expired too) and clock offsets.
 *   RELEASE  a release never deletes a lock its client does not hold
 *            (one node, clocks agree).
 *   NODES    never two holders at once (three nodes, clocks agree).
 *
 * Timing constants: T and HORIZON are not leaderd's (nothing in src/ sets
 * them); any lock timeout of two or more ticks shows the same flaws.
 *
 * What it leaves out: fencing tokens (the naive design has none), renewal,
 * crashes (a crashed client is one that stops taking steps), and every
 * timing other than whole ticks. A horizon of HORIZON ticks bounds the
 * search; the counter-examples are found well inside it (breadth-first, so
 * each trail is a shortest one).
 */

#define T        2      /* the lock's timeout, in ticks */
#define HORIZON  8
#define NONE     255

#ifdef RACE
#define LOOKS_AT_OLD false
#define LEFT_BEHIND 0   /* the timestamp a crashed client left in the lock */
#else
#define LOOKS_AT_OLD true
#define LEFT_BEHIND NONE
#endif

#define IDLE     0      /* client states */
#define GOT      1      /* read an old timestamp with GET */
#define HOLD     2
#define RELEASING 3     /* read its own timestamp with GET, about to DEL */
#define WRITING  4      /* NODES: writing to the nodes one after the other */

byte now;               /* real time */
byte off[2];            /* clock offset of each client */
byte st[2];             /* client state */
byte seen[2];           /* GETSET: the timestamp read with GET */
byte mine[2];           /* the timestamp this client wrote (its expiry) */
byte lock = LEFT_BEHIND; /* one node: the timestamp in the lock, NONE = no key */

/* NODES: each node's key (owner 0/1, NONE = no key) and when it expires. */
byte owner[3] = NONE;
byte expires[3];
byte next[2];           /* the next node the client writes to */
byte wins[2];           /* how many writes succeeded */
byte wrote[2];          /* when the client wrote last */

#define clk(c)      (now + off[c])
#define name(c)     (c == 0 -> 'A' : 'B')
#define holding(c)  (st[c] == HOLD && clk(c) < mine[c])

#ifdef NODES
#define ONE_NODE false
#else
#define ONE_NODE true
#endif

inline check() {
#ifdef RELEASE
    skip
#else
    assert(!(holding(0) && holding(1)))
#endif
}

proctype client(byte c) {
    do
    :: atomic { now < HORIZON && st[c] == IDLE && lock == NONE && ONE_NODE
        -> lock = clk(c) + T + 1; mine[c] = lock; st[c] = HOLD;
           printf("t=%d %c: SETNX lock %d -> 1, holds until its clock reads %d\n", now, name(c), lock, lock);
           check() }
    :: atomic { now < HORIZON && st[c] == IDLE && lock != NONE && lock > clk(c) && ONE_NODE
        -> skip }   /* SETNX fails and the lock is not expired: try later */
    :: atomic { now < HORIZON && st[c] == IDLE && lock != NONE && lock <= clk(c) && ONE_NODE
        -> seen[c] = lock; st[c] = GOT;
           printf("t=%d %c: SETNX fails; GET lock -> %d, expired: its clock reads %d\n", now, name(c), seen[c], clk(c)) }
    :: atomic { st[c] == GOT ->
           byte old = lock;
           lock = clk(c) + T + 1;
           if
           :: !LOOKS_AT_OLD || old == NONE || old <= clk(c) ->
                mine[c] = lock; st[c] = HOLD;
                printf("t=%d %c: GETSET lock %d -> %d: holds until its clock reads %d\n", now, name(c), lock, old, lock)
           :: else ->
                st[c] = IDLE;
                printf("t=%d %c: GETSET lock %d -> %d, not expired: gives up\n", now, name(c), lock, old)
           fi;
           seen[c] = 0;
           check() }
    /* Release. */
    :: atomic { st[c] == HOLD && ONE_NODE
        ->
#ifdef RELEASE
           if
           :: lock == mine[c] -> st[c] = RELEASING;
                printf("t=%d %c: GET lock -> %d, its own timestamp\n", now, name(c), lock)
           :: else -> st[c] = IDLE; mine[c] = 0
           fi
#else
           /* Atomic compare-and-delete, so that only the GETSET flaw shows. */
           if
           :: lock == mine[c] -> lock = NONE
           :: else -> skip
           fi;
           st[c] = IDLE; mine[c] = 0
#endif
        }
    :: atomic { st[c] == RELEASING ->
           printf("t=%d %c: DEL lock (it holds %d, written by %c)\n", now, name(c), lock,
                  (lock == mine[1 - c] -> name(1 - c) : name(c)));
           assert(lock == mine[c] || lock == NONE);
           lock = NONE; st[c] = IDLE; mine[c] = 0 }

#ifdef NODES
    /* The same lock on three nodes, written one after the other. */
    :: atomic { now < HORIZON && st[c] == IDLE -> st[c] = WRITING; next[c] = 0; wins[c] = 0 }
    :: atomic { st[c] == WRITING ->
           if
           :: next[c] > 0 && now > wrote[c] ->
                printf("t=%d %c: (its write to node %d was held up in a partition since t=%d)\n", now, name(c), next[c] + 1, wrote[c])
           :: else
           fi;
           if
           :: owner[next[c]] == NONE ->
                owner[next[c]] = c; expires[next[c]] = now + T; wins[c]++;
                printf("t=%d %c: SET NX PX %d on node %d -> OK\n", now, name(c), T, next[c] + 1)
           :: else ->
                printf("t=%d %c: SET NX PX %d on node %d -> taken\n", now, name(c), T, next[c] + 1)
           fi;
           next[c]++; wrote[c] = now;
           if
           :: next[c] == 3 && wins[c] >= 2 ->
                st[c] = HOLD; mine[c] = clk(c) + T;
                printf("t=%d %c: %d of 3 writes succeeded: holds until %d\n", now, name(c), wins[c], mine[c])
           :: next[c] == 3 && wins[c] < 2 -> st[c] = IDLE
           :: else
           fi;
           check() }
    :: atomic { st[c] == HOLD -> st[c] = IDLE; mine[c] = 0 }
#endif
    od
}

init {
    atomic {
#if !defined(SKEW)
        off[0] = 0; off[1] = 0;
#else
        if :: off[0] = 0 :: off[0] = 1 :: off[0] = 2 fi;
        if :: off[1] = 0 :: off[1] = 1 :: off[1] = 2 fi;
        printf("clock offsets: A %d, B %d\n", off[0], off[1]);
#endif
        run client(0); run client(1)
    }
    /* Time: one tick at a time; keys on the nodes expire by real time. */
    do
    :: atomic { now < HORIZON ->
           now++;
           byte i = 0;
           do
           :: i < 3 -> if :: owner[i] != NONE && expires[i] <= now -> owner[i] = NONE :: else fi; i++
           :: else -> break
           od;
           check() }
    :: now == HORIZON -> break
    od
}
