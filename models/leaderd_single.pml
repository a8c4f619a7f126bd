/*
 * leaderd, single-server mode: two candidates (A, B) and one Redis server.
 *
 * WHAT IT MODELS
 *
 * The scripts, each one atomic step on the server:
 *   acquire.lua  key present: "held" (its TTL); quarantine present: "wait";
 *                no fencing counter: restart the counter from the server's
 *                clock, set the quarantine for one lease, "wait"; else INCR
 *                the counter, SET NX PX lease, "granted" with the token;
 *   renew.lua    refused ("late") when it arrives after the caller's
 *                deadline on the server's clock; else compare the whole
 *                value (holder and term id), then PEXPIRE lease, or
 *                "not ours";
 *   release.lua  compare-and-DEL.
 * The elector (src/election/elector.rs): a follower sends an acquire; on a
 * grant it leads until safe-until = its clock when the acquire was SENT +
 * renew_deadline (follow() returns `sent`, lead() starts from it); a leader
 * renews every retry_period, and a successful renewal moves safe-until to
 * the renewal's SEND time + renew_deadline (lead()); a call's deadline is
 * min(sent + retry_period, safe-until); an answer read at or after
 * safe-until ends the term ("late"); "not ours" ends it (lock_lost); a
 * leader may resign (SIGTERM: step down, then release). A candidate is
 * "inside its safe window" while its own clock is before safe-until: that
 * is what /leader answers and when the guard kills the term's processes
 * (src/actions/guard), even when leaderd itself is frozen.
 *
 * Time is whole ticks; every deadline is a countdown, so states do not
 * carry the absolute time and the search covers runs of ANY length
 * exhaustively (no horizon). The server's clock is real time. Each
 * candidate's monotonic clock reads real time + an offset d in [0, E] that
 * may move by one per tick (the clock runs 0, 1 or 2 ticks in a tick): any
 * interval it measures is off by at most E from the server's.
 *
 * FAULTS, until a nondeterministic instant `stop`:
 *   - pauses: no candidate step is ever forced, so any candidate may sit
 *     still for any number of ticks between any two of its steps (SIGSTOP,
 *     a stalled runtime), also with an answer waiting for it: after a pause
 *     tokio polls the call before its timeout, so a late answer is read;
 *   - messages: each request is processed at any later tick, or lost; each
 *     answer is delivered at any later tick, or lost; a renewal the caller
 *     gave up on stays in the network (one per candidate) and may land later;
 *   - data loss: the server loses everything (key, counter, quarantine) at
 *     any moment (restart without persistence, FLUSHALL);
 *   - a candidate crashes and restarts (its guard ends the window at once;
 *     a renewal it sent may still land).
 * After `stop` nothing fails or pauses: every candidate acts when its timer
 * says and every message is delivered before the next tick.
 *
 * TOKENS. Tokens are only compared by order and equality and increased by
 * one (INCR). After every step the token values are renamed to the smallest
 * values with the same order, equalities and +1 neighbours (canon()), which
 * changes no comparison and keeps the state space finite. The server clock
 * that restarts a counter (acquire.lua: TIME in microseconds) is the ghost
 * SCLK in token units, kept >= every token minted: the README's assumption
 * that the clock does not step back across a data loss by more than the time
 * since the previous one.
 *
 * PROPERTIES (assertions; -DVARIANT selects a deliberately broken variant
 * that must FAIL, see scripts/model-check):
 *   P_mutex  never two candidates inside their safe windows at once;
 *   P_token  every term's token is greater than every earlier term's,
 *            across data loss too;
 *   P_live   when faults stop, some candidate leads within LB ticks, and
 *            no candidate makes more than ZT_MAX calls in one tick.
 * Broken variants: SAFE_UNTIL_FROM_REPLY (safe-until from when the answer
 * was read), NO_QUARANTINE (a store without a counter grants at once),
 * COUNTER_FROM_ZERO (a restarted counter starts from 0, like a bare INCR),
 * RENEW_WITHOUT_COMPARE (PEXPIRE whatever key is there; this one PASSES in
 * single mode: a renewal is only believed while the window that started
 * before it is open, and the timing alone keeps the key ours until then -
 * the compare matters in quorum mode, see leaderd_quorum.pml).
 *
 * TIMING CONSTANTS (ticks), the smallest whole numbers that obey the rules
 * the code enforces:
 *   LD = 5  lease_duration: the key's TTL (acquire.lua/renew.lua PX
 *           lease_ms, passed by elector.rs ask()/lead()); also the
 *           quarantine (acquire.lua: PX lease_ms);
 *   RD = 3  renew_deadline: safe-until = sent + RD (elector.rs lead());
 *           src/config/mod.rs validate(): RD < LD and RD > 1.2 x RP;
 *   RP = 2  retry_period: renewal period and call deadline (elector.rs
 *           lead(), follow()), a follower's longest sleep (follow());
 *   E  = 1  clock error over a lease: src/config/redis.rs validate()
 *           requires LD - RD > the drift allowance (1% of the lease + 2 ms;
 *           README "Safety model" assumes it for every mode). Here E is 20%
 *           of the lease, far more than the rule allows, and LD - RD = 2 > E;
 *   the server deadline of a renewal (node.rs server_deadline()): the
 *           call's deadline, which the estimate may exceed by at most E.
 *
 * WHAT IT LEAVES OUT: presence, priority, hold-back, switchover and handoff
 * keys (they only restrict who may acquire, so cannot break the safety
 * properties; they would change P_live's bound); pub/sub (a follower may
 * act at any moment before `stop` anyway); foreign values, maxmemory and
 * errors other than lost messages; the follower's "guard" against a lease
 * that vanished without a release, and the released tombstone (they only
 * matter when the key alone is lost and the counter survives, which the
 * README does not promise exclusion for, and only add waiting otherwise);
 * a renewal sent without a server deadline (only before the first answer
 * of a term, which always has one here); Sentinel, Cluster and replicas;
 * a second renewal held up while an earlier one still is (the later one
 * is dropped); time inside a tick (events in one tick happen in every
 * order).
 */

#define LD 5
#define RD 3
#define RP 2
#define E  1
#ifndef LB
#define LB 10                   /* P_live: ticks after `stop` to a leader */
#endif
#define ZT_MAX 3

#define FOL 0
#define LEA 1
#define O_NONE 0                /* calls */
#define O_ACQ 1
#define O_REN 2
#define O_REL 3
#define R_NONE 0                /* answers */
#define R_GRANT 1
#define R_HELD 2
#define R_WAIT 3                /* quarantine */
#define R_OK 4
#define R_NOT 5
#define R_LATE 6

#define MIN(a, b) ((a) < (b) -> (a) : (b))
#define MAX(a, b) ((a) > (b) -> (a) : (b))
#define NAME(c) ((c) == 0 -> 'A' : 'B')

/* Tokens: every token-valued field is a slot of tk[] (see canon()). */
#define FT    tk[0]             /* the fencing counter */
#define RK(c) tk[1 + (c)]       /* the token in an answer on its way to c */
#define MAXT  tk[3]             /* ghost: the highest term token so far */
#define SCLK  tk[4]             /* ghost: the server's clock */
#define NT 5
byte tk[NT];

/* The server. */
byte kc;                        /* key: holder (candidate + 1), 0 = none */
byte kz;                        /* key: the term id */
byte ke;                        /* key: ticks until it expires */
bit  fp;                        /* the fencing counter exists */
byte qe;                        /* ticks left of the quarantine */

/* The candidates. */
bit  cm[2];                     /* FOL or LEA */
byte su[2];                     /* leading: ticks (its clock) to safe-until */
bit  d[2];                      /* clock offset, 0..E */
byte z[2];                      /* the term id of its call or term */
byte op[2];                     /* the call in progress */
bit  rq[2];                     /* its request is in the network */
byte dl[2];                     /* renewal: ticks to its server deadline + 1 (0: past) */
byte rp[2];                     /* the answer on its way */
byte rv[2];                     /* ...the TTL or quarantine in it */
byte el[2];                     /* its clock since the call was sent */
byte c0[2];                     /* the call's deadline, on its clock */
byte wk[2];                     /* ticks to its next action (after stop) */
bit  oq[2];                     /* a renewal it gave up on is in the network */
byte oz[2];                     /* ...its term id */
byte ow[2];                     /* ...ticks to its server deadline + 1 */

bit  stop;                      /* faults have stopped */
bit  led;                       /* someone led since */
bit  fin;                       /* P_live decided */
byte ss;                        /* ticks since stop */
byte zt[2];                     /* calls since the last tick, after stop */

/* Scratch, zero again at the end of every step (no state of its own). */
byte i_, v_, cur_, val_, id_, dd_;
byte ren_[NT];
bit P_mutex = 1, P_token = 1, P_live = 1;          /* names in assertions */

#define inwin(c) (cm[c] == LEA && su[c] > 0)

inline check() {
    assert(P_mutex && !(inwin(0) && inwin(1)))
}

inline say(c) {
    printf("%c ", NAME(c))
}

/* Rename tokens: same order, equalities and +1 neighbours; 0 stays 0. */
inline canon() {
    val_ = 0; v_ = 0;
    i_ = 0;
    do
    :: i_ < NT -> ren_[i_] = 0; i_++
    :: else -> break
    od;
    do
    :: true ->
        cur_ = 255; i_ = 0;
        do
        :: i_ < NT -> if :: tk[i_] > v_ && tk[i_] < cur_ -> cur_ = tk[i_] :: else -> skip fi; i_++
        :: else -> break
        od;
        if
        :: cur_ == 255 -> break
        :: else -> skip
        fi;
        val_ = val_ + (cur_ == v_ + 1 -> 1 : 2);
        i_ = 0;
        do
        :: i_ < NT -> if :: tk[i_] == cur_ -> ren_[i_] = val_ :: else -> skip fi; i_++
        :: else -> break
        od;
        v_ = cur_
    od;
    i_ = 0;
    do
    :: i_ < NT -> tk[i_] = ren_[i_]; i_++
    :: else -> break
    od;
    i_ = 0; val_ = 0; v_ = 0; cur_ = 0
}

/* Timers that decide when a candidate acts matter only after `stop`:
 * before it, a candidate may act at any moment anyway. */
#define set_wake(c, v) wk[c] = (stop -> (v) : 0)

/* ---- The scripts. Each leaves the answer in rp[c], rv[c], RK(c). */

inline acquire_script(c) {
    if
    :: kc != 0 -> rp[c] = R_HELD; rv[c] = ke
    :: kc == 0 && qe > 0 -> rp[c] = R_WAIT; rv[c] = qe
    :: kc == 0 && qe == 0 && !fp ->
        /* No fencing counter: new, or it lost its data. */
        fp = 1;
#ifdef COUNTER_FROM_ZERO
        FT = 0;
#else
        FT = SCLK;
#endif
#ifdef NO_QUARANTINE
        FT = FT + 1; SCLK = MAX(SCLK, FT);
        kc = c + 1; kz = z[c]; ke = LD; rp[c] = R_GRANT; RK(c) = FT
#else
        qe = LD; rp[c] = R_WAIT; rv[c] = LD
#endif
    :: kc == 0 && qe == 0 && fp ->
        FT = FT + 1; SCLK = MAX(SCLK, FT);
        kc = c + 1; kz = z[c]; ke = LD; rp[c] = R_GRANT; RK(c) = FT
    fi
}

#ifdef RENEW_WITHOUT_COMPARE
#define ours(c, id) (kc != 0)
#else
#define ours(c, id) (kc == c + 1 && kz == id)
#endif

/* renew.lua for c's renewal of term id_ with server deadline dd_ (+1). */
inline renew_script(c) {
    if
    :: dd_ == 0 -> rp[c] = R_LATE
    :: dd_ != 0 && ours(c, id_) -> ke = LD; rp[c] = R_OK
    :: dd_ != 0 && !ours(c, id_) -> rp[c] = R_NOT
    fi;
    id_ = 0; dd_ = 0
}

inline release_script(c) {
    if
    :: kc == c + 1 && kz == z[c] -> kc = 0; kz = 0; ke = 0
    :: else -> skip
    fi;
    rp[c] = R_OK
}

inline process(c) {
    if
    :: op[c] == O_ACQ -> acquire_script(c)
    :: op[c] == O_REN -> id_ = z[c]; dd_ = dl[c]; renew_script(c)
    :: op[c] == O_REL -> release_script(c)
    fi;
    rq[c] = 0; dl[c] = 0
}

inline tell(c) {
    if
    :: rp[c] == R_GRANT -> printf("granted, token %d", RK(c))
    :: rp[c] == R_HELD -> printf("held (%d ticks left)", rv[c])
    :: rp[c] == R_WAIT -> printf("wait %d (quarantine)", rv[c])
    :: rp[c] == R_OK && op[c] == O_REN -> printf("renewed: the key expires in %d", LD)
    :: rp[c] == R_OK && op[c] != O_REN -> printf("released")
    :: rp[c] == R_NOT -> printf("not ours")
    :: rp[c] == R_LATE -> printf("past its deadline: refused")
    fi
}

inline dataloss() {
    printf("the server loses its data\n");
    kc = 0; kz = 0; ke = 0; fp = 0; FT = 0; qe = 0
}

/* ---- The candidate. */

inline count_call(c) {
    if
    :: stop -> zt[c]++; assert(P_live && zt[c] <= ZT_MAX)
    :: else -> skip
    fi
}

/* A term id not in use by c on the server or in the network (term ids are
 * random 128-bit values). */
inline fresh_id(c) {
    z[c] = 1;
    do
    :: (kc == c + 1 && kz == z[c]) || (oq[c] && oz[c] == z[c]) -> z[c]++
    :: else -> break
    od
}

inline start_call(c, o) {
    count_call(c);
    op[c] = o; rq[c] = 1; el[c] = 0; rp[c] = R_NONE
}

/* why: 1 renew failed (safe-until passed), 2 an answer read too late,
 * 3 lock lost */
inline step_down(c, why) {
    say(c); printf("steps down (");
    if
    :: why == 1 -> printf("safe-until passed")
    :: why == 2 -> printf("the renewal was answered too late")
    :: why == 3 -> printf("lock lost")
    fi;
    printf(")\n");
    cm[c] = FOL; su[c] = 0; z[c] = 0; set_wake(c, 0)
}

inline become_leader(c) {
#ifdef SAFE_UNTIL_FROM_REPLY
    su[c] = RD;
#else
    su[c] = (el[c] < RD -> RD - el[c] : 0);
#endif
    cm[c] = LEA;
    say(c); printf("LEADS with token %d, safe-until in %d (its clock)", RK(c), su[c]);
    if
    :: inwin(1 - c) -> printf(" - while %c leads, safe-until in %d", NAME(1 - c), su[1 - c])
    :: else -> skip
    fi;
    printf("\n");
    /* A grant read after its safe-until (the candidate was paused longer
     * than renew_deadline) opens no window: lead() steps down at once. */
    if
    :: su[c] > 0 -> assert(P_token && RK(c) > MAXT); MAXT = RK(c)
    :: else -> skip
    fi;
    set_wake(c, (el[c] < RP -> RP - el[c] : 0));
    if
    :: stop -> led = 1; fin = 1
    :: else -> skip
    fi
}

inline end_call(c) {
    op[c] = O_NONE; rq[c] = 0; dl[c] = 0; rp[c] = R_NONE; rv[c] = 0; RK(c) = 0; el[c] = 0; c0[c] = 0;
    if
    :: cm[c] == FOL -> z[c] = 0
    :: else -> skip
    fi
}

/* The answer is read. */
inline receive(c) {
    say(c); printf("reads: "); tell(c); printf("\n");
    if
    :: op[c] == O_ACQ && rp[c] == R_GRANT -> become_leader(c)
    :: op[c] == O_ACQ && rp[c] != R_GRANT -> set_wake(c, MIN(rv[c], RP))
    :: op[c] == O_REN && rp[c] == R_OK && su[c] == 0 -> step_down(c, 2)
    :: op[c] == O_REN && rp[c] == R_OK && su[c] > 0 ->
#ifdef SAFE_UNTIL_FROM_REPLY
        su[c] = RD; set_wake(c, RP);
#else
        su[c] = (el[c] < RD -> RD - el[c] : 0);
        set_wake(c, (el[c] < RP -> RP - el[c] : 0));
#endif
        say(c); printf("safe-until in %d (its clock)\n", su[c])
    :: op[c] == O_REN && rp[c] == R_NOT -> step_down(c, 3)
    :: op[c] == O_REN && rp[c] == R_LATE -> set_wake(c, 0)
    :: op[c] == O_REL -> set_wake(c, RP)
    fi;
    end_call(c)
}

/* The call's deadline passed: a renewal still in the network stays there
 * (unless one is already held up there: then it is lost). */
inline give_up(c) {
    say(c); printf("gives up waiting\n");
    if
    :: rq[c] && op[c] == O_REN && !oq[c] -> oq[c] = 1; oz[c] = z[c]; ow[c] = dl[c]
    :: else -> skip
    fi;
    set_wake(c, 0);
    end_call(c)
}

inline crash(c) {
    say(c); printf("crashes and restarts\n");
    if
    :: rq[c] && op[c] == O_REN && !oq[c] -> oq[c] = 1; oz[c] = z[c]; ow[c] = dl[c]
    :: else -> skip
    fi;
    cm[c] = FOL; su[c] = 0;
    end_call(c); z[c] = 0; wk[c] = 0
}

#define may(c) (!fin && op[c] == O_NONE && (!stop || wk[c] == 0))

#define CANDIDATE(c) \
    :: d_step { (may(c) && cm[c] == FOL) -> fresh_id(c); start_call(c, O_ACQ); c0[c] = RP; \
                say(c); printf("sends acquire\n") } \
    :: d_step { (may(c) && cm[c] == LEA && su[c] == 0) -> step_down(c, 1) } \
    :: d_step { (may(c) && cm[c] == LEA && su[c] > 0) -> start_call(c, O_REN); c0[c] = MIN(RP, su[c]); \
                dl[c] = c0[c] + E + 1; say(c); printf("sends renew, safe-until in %d\n", su[c]) } \
    :: d_step { (!fin && !stop && op[c] == O_NONE && cm[c] == LEA) -> \
                say(c); printf("resigns: steps down, sends release\n"); \
                cm[c] = FOL; su[c] = 0; start_call(c, O_REL); c0[c] = RD } \
    :: d_step { (!fin && rq[c] && !oq[c]) -> say(c); printf("-> server: "); process(c); tell(c); printf("\n"); \
                canon(); check() } \
    :: d_step { (!fin && !stop && rq[c] && !oq[c]) -> say(c); printf("-> server: "); process(c); tell(c); \
                printf(" (the answer is lost)\n"); rp[c] = R_NONE; rv[c] = 0; RK(c) = 0; canon(); check() } \
    :: d_step { (!fin && !stop && rq[c]) -> say(c); printf("-> server: the request is lost\n"); rq[c] = 0; dl[c] = 0 } \
    :: d_step { (!fin && op[c] != O_NONE && !rq[c] && rp[c] != R_NONE) -> receive(c); canon(); check() } \
    :: d_step { (!fin && !stop && op[c] != O_NONE && el[c] >= c0[c]) -> give_up(c); canon() } \
    :: d_step { (!fin && oq[c]) -> \
                say(c); printf("-> server, held up until now: renew -> "); \
                id_ = oz[c]; dd_ = ow[c]; renew_script(c); tell(c); printf(" (nobody waits for it)\n"); \
                rp[c] = R_NONE; oq[c] = 0; oz[c] = 0; ow[c] = 0; check() } \
    :: d_step { (!fin && !stop && oq[c]) -> oq[c] = 0; oz[c] = 0; ow[c] = 0 } \
    :: d_step { (!fin && !stop && (cm[c] == LEA || op[c] != O_NONE)) -> crash(c); canon() }

/* ---- Time. */

inline advance(c, nd) {
    v_ = 1 + nd - d[c];
    su[c] = (su[c] > v_ -> su[c] - v_ : 0);
    wk[c] = (wk[c] > v_ -> wk[c] - v_ : 0);
    if
    :: op[c] != O_NONE -> el[c] = MIN(el[c] + v_, RD)
    :: else -> skip
    fi;
    dl[c] = (dl[c] > 0 -> dl[c] - 1 : 0);
    ow[c] = (ow[c] > 0 -> ow[c] - 1 : 0);
    d[c] = nd;
    v_ = 0
}

inline tell_clock(c, n) {
    if
    :: n > d[c] -> printf(" (%c's clock runs fast)", NAME(c))
    :: n < d[c] -> printf(" (%c's clock runs slow)", NAME(c))
    :: else -> skip
    fi
}

inline tell_tick(n0, n1) {
    printf("-- tick"); tell_clock(0, n0); tell_clock(1, n1); printf("\n")
}

/* After `stop`, no tick while anyone has something due now. */
#define due(c) (op[c] != O_NONE || wk[c] == 0)
#define may_tick (!fin && (!stop || !(due(0) || due(1) || oq[0] || oq[1])))

#define TICK(n0, n1) \
    :: d_step { may_tick -> \
        tell_tick(n0, n1); \
        advance(0, n0); advance(1, n1); \
        if \
        :: kc != 0 -> ke--; if :: ke == 0 -> kc = 0; kz = 0 :: else -> skip fi \
        :: else -> skip \
        fi; \
        qe = (qe > 0 -> qe - 1 : 0); \
        if \
        :: stop -> ss++; zt[0] = 0; zt[1] = 0; \
            if \
            :: ss >= LB -> assert(P_live && led); fin = 1 \
            :: else -> skip \
            fi \
        :: else -> skip \
        fi; \
        check() }

/* At `stop`, each timer may hold any value it could have had. */
inline any_wake(c) {
    if
    :: wk[c] = 0
    :: wk[c] = 1
    :: wk[c] = RP
    fi;
    if
    :: cm[c] == LEA && wk[c] > su[c] -> wk[c] = su[c]
    :: else -> skip
    fi
}

init {
    do
    CANDIDATE(0)
    CANDIDATE(1)
    :: d_step { (!fin && !stop && (fp || kc != 0 || qe > 0)) -> dataloss(); canon() }
    :: atomic { (!fin && !stop && op[0] == O_NONE && op[1] == O_NONE && !oq[0] && !oq[1]) ->
                stop = 1; ss = 0; led = (inwin(0) || inwin(1)); fin = led;
                any_wake(0); any_wake(1);
                printf("faults stop\n") }
    TICK(0, 0)
    TICK(0, 1)
    TICK(1, 0)
    TICK(1, 1)
    :: fin -> break
    od
}
