/*
 * leaderd, quorum mode: two candidates (A, B) and three independent Redis
 * masters (1, 2, 3). Read leaderd_single.pml first: the frame (ticks,
 * countdowns, clocks off by up to E, tokens renamed by order, pauses,
 * `stop`), the timing constants and where each comes from, and the
 * single-server scripts are the same here. This file adds what quorum mode
 * does (src/backend/redis/mod.rs acquire(), renew(), release(), seal(),
 * undo(); the scripts' quorum parts):
 *
 *   acquire  the acquire script on all three masters in parallel; a term
 *            needs grants from a majority (2). Fewer: the grants are undone
 *            at once, silently (release.lua without a notice). A majority:
 *            the candidate takes the highest token its masters minted and
 *            SEALS it on every granting master (seal.lua: the key takes the
 *            sealed value and the token, the counter is raised to it); the
 *            term counts only if a majority sealed, else the grants are
 *            undone, in both forms (a master may hold the sealed one);
 *   renew    on all three; counts with a majority; a master without the
 *            key gets it back (restore) unless the term was released there
 *            (released >= token); the counter is raised to the term's
 *            token; a renewal that arrives after its server deadline is
 *            refused; "not ours" from a majority ends the term;
 *   release  on all three: compare-and-DEL of the sealed value, and the
 *            released tombstone (raised to the token) on every master.
 * safe-until is the acquire's SEND time + renew_deadline, as in single mode
 * (the seal round comes after it and is not counted).
 *
 * Each master call is bounded by a per-server timeout of lease/20 (mod.rs
 * node_deadline()), under a tick: so every request of a call is processed,
 * lost, or (a renewal) held up in the network before the next tick, and
 * an answer is read at any later moment (a paused candidate reads it when
 * it wakes). Faults per master: its data lost at any moment; a crash or a
 * partition is a run of lost messages (each request and answer may be
 * lost, independently per master).
 *
 * PROPERTIES: P_mutex and P_token as in single mode (P_token over terms
 * whose window opens); P_live: when faults stop, some candidate leads
 * within LB ticks.
 * Broken variants that must FAIL: SAFE_UNTIL_FROM_REPLY; NO_QUARANTINE (a
 * master without a counter grants at once); NO_SEAL (the term's token is
 * not written back to the counters). RENEW_WITHOUT_COMPARE (renew extends
 * whatever key is there) passes the same bitstate search, and a
 * breadth-first search to depth 20 with NF = 2: see README "Proof".
 *
 * HOW FAR IT IS CHECKED. Not exhaustively: the reachable state space is
 * far larger than single mode's (three masters' keys, TTLs, quarantines,
 * counters and tombstones in every combination; tens of millions of states
 * even without faults). scripts/model-check runs a bitstate search
 * (-DBITSTATE -w25, depth <= 10000 steps, NF = 3 faults per run), which
 * visits some 17 million states in under a minute and finds no violation;
 * that is evidence, not a proof. The broken variants are found
 * (NO_QUARANTINE exhaustively breadth-first with NF = 2, the others by a
 * depth-bounded bitstate search). Faults are counted: at most NF lost or
 * held-up messages, crashes and data losses per run (-DNF=...); pauses,
 * clock drift and resignations are not counted. -DFRESH_MASTERS starts
 * with brand-new masters (no counter) instead of masters with a counter.
 *
 * BOUNDS AND WHAT IT LEAVES OUT, beyond leaderd_single.pml's list: at most
 * one renewal per candidate held up in the network at a time (a second is
 * lost); the floor (highest token seen + 1) is not passed (it only raises
 * tokens, so P_token holding without it holds with it); requests left
 * undelivered when a candidate gives up on a call are lost (an acquire
 * delivered late is an acquire whose answer was lost, which is modelled);
 * after `stop` a follower's sleep is any of 1 or RP ticks (the code's
 * min(remaining, RP) lies in that range).
 *
 * Timing constants: as leaderd_single.pml (LD 5, RD 3, RP 2, E 1); in
 * quorum mode src/config/redis.rs validate() enforces LD - RD > the drift
 * allowance.
 */

#define NM 3
#define MAJ 2
#define ALL 7
#define LD 5
#define RD 3
#define RP 2
#ifndef E
#define E  1
#endif
#ifndef LB
#define LB 12
#endif
#define ZT_MAX 6
#ifndef NF
#define NF 3                    /* faults per run: lost or held messages, data losses, crashes */
#endif
#define fault (nf < NF)
#define FAULT nf++

#define FOL 0
#define LEA 1
#define O_NONE 0
#define O_ACQ 1
#define O_SEAL 2
#define O_UNDO 3
#define O_REN 4
#define O_REL 5

#define MIN(a, b) ((a) < (b) -> (a) : (b))
#define MAX(a, b) ((a) > (b) -> (a) : (b))
#define NAME(c) ((c) == 0 -> 'A' : 'B')
#define BIT(m) (1 << (m))
#define COUNT(x) ((((x) & 1) != 0) + (((x) & 2) != 0) + (((x) & 4) != 0))

/* Tokens (see canon()). */
#define FT(m)  tk[(m)]          /* master m's fencing counter */
#define RT(m)  tk[3 + (m)]      /* master m's released tombstone, 0 = none */
#define TT(c)  tk[6 + (c)]      /* c's term token */
#define GT(c)  tk[8 + (c)]      /* the highest token c was granted (to seal) */
#define QA(c)  tk[10 + (c)]     /* the token of c's held-up renewal */
#define MAXT   tk[12]           /* ghost: highest term token so far */
#define NT 13
/* The token in a key's value is not kept: nothing in the model reads it
 * (it feeds the floor, which is left out). The masters' clock, from which
 * a counter restarts, is taken as the highest token in the state: the
 * smallest value the README's clock assumption allows (a real clock is
 * higher, which only makes the restarted counter safer). */
byte tk[NT];

/* The masters. */
byte kc[NM];                    /* key: holder + 1, 0 = none */
byte kz[NM];                    /* key: term id */
bit  ks[NM];                    /* key: sealed */
byte ke[NM];                    /* key: ticks to expiry */
bit  fp[NM];                    /* the counter exists */
byte qe[NM];                    /* quarantine: ticks left */

/* The candidates. */
bit  cm[2];
byte su[2];
bit  d[2];
byte z[2];
byte op[2];
byte pend[2];                   /* masters the call has not reached yet */
byte gm[2];                     /* masters that granted */
byte nok[2];                    /* answers "renewed" / "sealed" */
byte nnot[2];                   /* answers "not ours" */
bit  also[2];                   /* the undo takes the sealed form too */
byte el[2];
byte c0[2];
byte dl[2];                     /* renewal: server deadline + 1 at sending */
byte wk[2];
bit  bo[2];                     /* after stop: choose the next sleep */
bit  hq[2];                     /* a renewal held up in the network */
byte hm[2];                     /* ...to master */
byte hz[2];                     /* ...its term id */
byte hd[2];                     /* ...ticks to its server deadline + 1 */

byte nf;                        /* faults so far (see NF) */
bit  stop;
bit  led;
bit  fin;
byte ss;
byte zt[2];

byte i_, v_, cur_, val_, id_, dd_, m_;
byte ren_[NT];
bit P_mutex = 1, P_token = 1, P_live = 1;

#define inwin(c) (cm[c] == LEA && su[c] > 0)

inline check() {
    assert(P_mutex && !(inwin(0) && inwin(1)))
}

inline say(c) {
    printf("%c ", NAME(c))
}

/* cur_ := the highest token in the state. */
inline highest() {
    cur_ = 0; i_ = 0;
    do
    :: i_ < NT -> cur_ = MAX(cur_, tk[i_]); i_++
    :: else -> break
    od;
    i_ = 0
}

/* A tombstone below every token a renewal can still carry (the live terms',
 * the held-up renewals', the one being acquired, and every future term's,
 * which is above MAXT) decides nothing any more: it becomes "none". */
#define live_below(x) ((TT(0) != 0 && TT(0) <= (x)) || (TT(1) != 0 && TT(1) <= (x)) || \
                       (QA(0) != 0 && QA(0) <= (x)) || (QA(1) != 0 && QA(1) <= (x)) || \
                       (GT(0) != 0 && GT(0) <= (x)) || (GT(1) != 0 && GT(1) <= (x)) || MAXT < (x))
inline forget_tombstones() {
    i_ = 0;
    do
    :: i_ < NM -> if :: RT(i_) != 0 && !live_below(RT(i_)) -> RT(i_) = 0 :: else -> skip fi; i_++
    :: else -> break
    od;
    i_ = 0
}

inline canon() {
    forget_tombstones();
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
    :: i_ < NT -> tk[i_] = ren_[i_]; ren_[i_] = 0; i_++
    :: else -> break
    od;
    i_ = 0; val_ = 0; v_ = 0; cur_ = 0
}

#define set_wake(c, v) wk[c] = (stop -> (v) : 0)

inline delkey(m) {
    kc[m] = 0; kz[m] = 0; ks[m] = 0; ke[m] = 0
}

/* ---- The scripts on master m for candidate c. counted: the answer
 * reaches c. */

inline acquire_script(c, m, counted) {
    if
    :: kc[m] != 0 -> printf("held")
    :: kc[m] == 0 && qe[m] > 0 -> printf("wait %d (quarantine)", qe[m])
    :: kc[m] == 0 && qe[m] == 0 && !fp[m] ->
        fp[m] = 1; highest(); FT(m) = cur_; cur_ = 0;
#ifdef NO_QUARANTINE
        FT(m) = FT(m) + 1;
        kc[m] = c + 1; kz[m] = z[c]; ks[m] = 0; ke[m] = LD;
        printf("granted, token %d", FT(m));
        if
        :: counted -> gm[c] = gm[c] | BIT(m); GT(c) = MAX(GT(c), FT(m))
        :: else -> skip
        fi
#else
        qe[m] = LD; printf("no counter: wait %d (quarantine)", LD)
#endif
    :: kc[m] == 0 && qe[m] == 0 && fp[m] ->
        FT(m) = FT(m) + 1;
        kc[m] = c + 1; kz[m] = z[c]; ks[m] = 0; ke[m] = LD;
        printf("granted, token %d", FT(m));
        if
        :: counted -> gm[c] = gm[c] | BIT(m); GT(c) = MAX(GT(c), FT(m))
        :: else -> skip
        fi
    fi
}

inline seal_script(c, m, counted) {
    if
    :: kc[m] == c + 1 && kz[m] == z[c] && !ks[m] ->
        ks[m] = 1;
#ifndef NO_SEAL
        if
        :: !fp[m] || FT(m) < GT(c) -> fp[m] = 1; FT(m) = GT(c)
        :: else -> skip
        fi;
#endif
        printf("sealed with token %d", GT(c));
        if
        :: counted -> nok[c]++
        :: else -> skip
        fi
    :: else -> printf("not ours: not sealed")
    fi
}

inline undo_script(c, m) {
    if
    :: kc[m] == c + 1 && kz[m] == z[c] && (!ks[m] || also[c]) -> delkey(m); printf("undone")
    :: else -> printf("nothing to undo")
    fi
}

/* renew.lua of c's term id_ with token QA/TT passed in v_, deadline dd_. */
#ifdef RENEW_WITHOUT_COMPARE
#define ours(c, m) (kc[m] != 0)
#else
#define ours(c, m) (kc[m] == c + 1 && kz[m] == id_ && ks[m])
#endif
inline renew_script(c, m, counted) {
    if
    :: dd_ == 0 -> printf("past its deadline: refused")
    :: dd_ != 0 && ours(c, m) -> ke[m] = LD; printf("renewed");
        if
        :: counted -> nok[c]++
        :: else -> skip
        fi
    :: dd_ != 0 && !ours(c, m) && kc[m] == 0 && RT(m) != 0 && RT(m) >= v_ ->
        printf("not ours (the term was released here)");
        if
        :: counted -> nnot[c]++
        :: else -> skip
        fi
    :: dd_ != 0 && !ours(c, m) && kc[m] == 0 && !(RT(m) != 0 && RT(m) >= v_) ->
        kc[m] = c + 1; kz[m] = id_; ks[m] = 1; ke[m] = LD;
        if
        :: !fp[m] || FT(m) < v_ -> fp[m] = 1; FT(m) = v_
        :: else -> skip
        fi;
        printf("key restored");
        if
        :: counted -> nok[c]++
        :: else -> skip
        fi
    :: dd_ != 0 && !ours(c, m) && kc[m] != 0 ->
        printf("not ours");
        if
        :: counted -> nnot[c]++
        :: else -> skip
        fi
    fi;
    id_ = 0; dd_ = 0; v_ = 0
}

inline release_script(c, m) {
    if
    :: kc[m] == c + 1 && kz[m] == z[c] && ks[m] -> delkey(m); printf("released")
    :: else -> printf("not ours")
    fi;
    if
    :: RT(m) == 0 || RT(m) < TT(c) -> RT(m) = TT(c)
    :: else -> skip
    fi
}

inline process(c, m, counted) {
    if
    :: op[c] == O_ACQ -> printf("acquire -> "); acquire_script(c, m, counted)
    :: op[c] == O_SEAL -> printf("seal -> "); seal_script(c, m, counted)
    :: op[c] == O_UNDO -> printf("undo -> "); undo_script(c, m)
    :: op[c] == O_REN -> printf("renew -> "); id_ = z[c]; dd_ = dl[c]; v_ = TT(c); renew_script(c, m, counted)
    :: op[c] == O_REL -> printf("release -> "); release_script(c, m)
    fi;
    pend[c] = pend[c] & (ALL - BIT(m))
}

inline dataloss(m) {
    printf("master %d loses its data\n", m + 1);
    delkey(m); fp[m] = 0; FT(m) = 0; RT(m) = 0; qe[m] = 0
}

/* ---- The candidate. */

inline count_call(c) {
    if
    :: stop -> zt[c]++; assert(P_live && zt[c] <= ZT_MAX)
    :: else -> skip
    fi
}

inline fresh_id(c) {
    z[c] = 1;
    do
    :: (kc[0] == c + 1 && kz[0] == z[c]) || (kc[1] == c + 1 && kz[1] == z[c]) ||
       (kc[2] == c + 1 && kz[2] == z[c]) || (hq[c] && hz[c] == z[c]) -> z[c]++
    :: else -> break
    od
}

inline send(c, o, to) {
    count_call(c);
    op[c] = o; pend[c] = to; nok[c] = 0; nnot[c] = 0
}

inline end_call(c) {
    op[c] = O_NONE; pend[c] = 0; gm[c] = 0; nok[c] = 0; nnot[c] = 0; also[c] = 0;
    el[c] = 0; c0[c] = 0; dl[c] = 0; GT(c) = 0;
    if
    :: cm[c] == FOL -> z[c] = 0; TT(c) = 0
    :: else -> skip
    fi
}

inline step_down(c, why) {
    say(c); printf("steps down (");
    if
    :: why == 1 -> printf("safe-until passed")
    :: why == 2 -> printf("the renewal was answered too late")
    :: why == 3 -> printf("lock lost")
    fi;
    printf(")\n");
    cm[c] = FOL; su[c] = 0; z[c] = 0; TT(c) = 0; set_wake(c, 0)
}

inline become_leader(c) {
#ifdef SAFE_UNTIL_FROM_REPLY
    su[c] = RD;
#else
    su[c] = (el[c] < RD -> RD - el[c] : 0);
#endif
    cm[c] = LEA; TT(c) = GT(c);
    say(c); printf("LEADS with token %d, safe-until in %d (its clock)", TT(c), su[c]);
    if
    :: inwin(1 - c) -> printf(" - while %c leads, safe-until in %d", NAME(1 - c), su[1 - c])
    :: else -> skip
    fi;
    printf("\n");
    if
    :: su[c] > 0 -> assert(P_token && TT(c) > MAXT); MAXT = TT(c)
    :: else -> skip
    fi;
    set_wake(c, (el[c] < RP -> RP - el[c] : 0));
    if
    :: stop -> led = 1; fin = 1
    :: else -> skip
    fi
}

/* Every request of the call was processed (or lost): the answers are read. */
inline collect(c) {
    if
    :: op[c] == O_ACQ && COUNT(gm[c]) >= MAJ ->
        say(c); printf("granted by a majority: sends seal with token %d\n", GT(c));
        send(c, O_SEAL, gm[c])
    :: op[c] == O_ACQ && COUNT(gm[c]) < MAJ && gm[c] != 0 ->
        say(c); printf("granted by fewer than a majority: undoes its grants\n");
        send(c, O_UNDO, gm[c]); also[c] = 0
    :: op[c] == O_ACQ && gm[c] == 0 ->
        say(c); printf("no grant\n");
        bo[c] = stop; end_call(c)
    :: op[c] == O_SEAL && nok[c] >= MAJ -> become_leader(c); end_call(c)
    :: op[c] == O_SEAL && nok[c] < MAJ ->
        say(c); printf("sealed on fewer than a majority: undoes its grants\n");
        send(c, O_UNDO, gm[c]); also[c] = 1
    :: op[c] == O_UNDO -> bo[c] = stop; end_call(c)
    :: op[c] == O_REN && nok[c] >= MAJ && su[c] == 0 -> step_down(c, 2); end_call(c)
    :: op[c] == O_REN && nok[c] >= MAJ && su[c] > 0 ->
#ifdef SAFE_UNTIL_FROM_REPLY
        su[c] = RD; set_wake(c, RP);
#else
        su[c] = (el[c] < RD -> RD - el[c] : 0);
        set_wake(c, (el[c] < RP -> RP - el[c] : 0));
#endif
        say(c); printf("renewed on a majority: safe-until in %d (its clock)\n", su[c]);
        end_call(c)
    :: op[c] == O_REN && nok[c] < MAJ && nnot[c] >= MAJ -> step_down(c, 3); end_call(c)
    :: op[c] == O_REN && nok[c] < MAJ && nnot[c] < MAJ ->
        say(c); printf("renewal failed\n"); set_wake(c, 0); end_call(c)
    :: op[c] == O_REL -> set_wake(c, RP); end_call(c)
    fi
}

inline crash(c) {
    say(c); printf("crashes and restarts\n");
    cm[c] = FOL; su[c] = 0; end_call(c); z[c] = 0; TT(c) = 0; wk[c] = 0
}

#define may(c) (!fin && op[c] == O_NONE && !bo[c] && (!stop || wk[c] == 0))
#define blocked(c, m) (hq[c] && hm[c] == m)

#define PAIR(c, m) \
    :: d_step { (!fin && (pend[c] & BIT(m)) && !blocked(c, m)) -> \
                say(c); printf("-> master %d: ", m + 1); process(c, m, 1); printf("\n"); canon(); check() } \
    :: d_step { (!fin && !stop && fault && (pend[c] & BIT(m)) && !blocked(c, m) && op[c] != O_UNDO && op[c] != O_REL) -> \
                FAULT; say(c); printf("-> master %d: ", m + 1); process(c, m, 0); printf(" (the answer is lost)\n"); \
                canon(); check() } \
    :: d_step { (!fin && !stop && fault && (pend[c] & BIT(m))) -> \
                FAULT; say(c); printf("-> master %d: the request is lost\n", m + 1); pend[c] = pend[c] & (ALL - BIT(m)) } \
    :: d_step { (!fin && !stop && fault && (pend[c] & BIT(m)) && op[c] == O_REN && !hq[c]) -> \
                FAULT; say(c); printf("-> master %d: the renewal is held up in the network\n", m + 1); \
                hq[c] = 1; hm[c] = m; hz[c] = z[c]; hd[c] = dl[c]; QA(c) = TT(c); \
                pend[c] = pend[c] & (ALL - BIT(m)); canon() }

#define CANDIDATE(c) \
    :: d_step { (may(c) && cm[c] == FOL) -> fresh_id(c); send(c, O_ACQ, ALL); el[c] = 0; c0[c] = RP; \
                GT(c) = 0; gm[c] = 0; say(c); printf("sends acquire\n") } \
    :: d_step { (may(c) && cm[c] == LEA && su[c] == 0) -> step_down(c, 1); canon() } \
    :: d_step { (may(c) && cm[c] == LEA && su[c] > 0) -> send(c, O_REN, ALL); el[c] = 0; c0[c] = MIN(RP, su[c]); \
                dl[c] = c0[c] + E + 1; say(c); printf("sends renew, safe-until in %d\n", su[c]) } \
    :: d_step { (!fin && !stop && op[c] == O_NONE && cm[c] == LEA) -> \
                say(c); printf("resigns: steps down, sends release\n"); \
                cm[c] = FOL; su[c] = 0; send(c, O_REL, ALL); el[c] = 0; c0[c] = RD } \
    PAIR(c, 0) \
    PAIR(c, 1) \
    PAIR(c, 2) \
    :: d_step { (!fin && op[c] != O_NONE && pend[c] == 0) -> collect(c); canon(); check() } \
    :: d_step { (!fin && !stop && op[c] != O_NONE && pend[c] == 0 && el[c] >= c0[c]) -> \
                say(c); printf("gives up waiting\n"); end_call(c); canon() } \
    :: d_step { (!fin && hq[c]) -> \
                say(c); printf("-> master %d, held up until now: renew -> ", hm[c] + 1); \
                m_ = hm[c]; id_ = hz[c]; dd_ = hd[c]; v_ = QA(c); renew_script(c, m_, 0); \
                printf(" (nobody waits for it)\n"); m_ = 0; \
                hq[c] = 0; hm[c] = 0; hz[c] = 0; hd[c] = 0; QA(c) = 0; canon(); check() } \
    :: d_step { (!fin && !stop && hq[c]) -> hq[c] = 0; hm[c] = 0; hz[c] = 0; hd[c] = 0; QA(c) = 0; canon() } \
    :: d_step { (!fin && !stop && fault && pend[c] == 0 && (cm[c] == LEA || op[c] != O_NONE)) -> FAULT; crash(c); canon() } \
    :: atomic { (!fin && bo[c]) -> if :: wk[c] = 1 :: wk[c] = RP fi; bo[c] = 0 }

/* ---- Time. */

inline advance(c, nd) {
    v_ = 1 + nd - d[c];
    su[c] = (su[c] > v_ -> su[c] - v_ : 0);
    wk[c] = (wk[c] > v_ -> wk[c] - v_ : 0);
    if
    :: op[c] != O_NONE -> el[c] = MIN(el[c] + v_, RD)
    :: else -> skip
    fi;
    hd[c] = (hd[c] > 0 -> hd[c] - 1 : 0);
    d[c] = nd;
    v_ = 0
}

inline expire(m) {
    if
    :: kc[m] != 0 -> ke[m]--; if :: ke[m] == 0 -> delkey(m) :: else -> skip fi
    :: else -> skip
    fi;
    qe[m] = (qe[m] > 0 -> qe[m] - 1 : 0)
}

inline tell_clock(c, n) {
    if
    :: n > d[c] -> printf(" (%c's clock runs fast)", NAME(c))
    :: n < d[c] -> printf(" (%c's clock runs slow)", NAME(c))
    :: else -> skip
    fi
}

/* No tick while a request is on its way to a master (the per-server
 * timeout is under a tick); after `stop`, none while anyone has something
 * due now. */
#define due(c) (op[c] != O_NONE || bo[c] || wk[c] == 0)
#define may_tick (!fin && pend[0] == 0 && pend[1] == 0 && (!stop || !(due(0) || due(1) || hq[0] || hq[1])))

#define TICK(n0, n1) \
    :: d_step { (may_tick && n0 <= E && n1 <= E) -> \
        printf("-- tick"); tell_clock(0, n0); tell_clock(1, n1); printf("\n"); \
        advance(0, n0); advance(1, n1); expire(0); expire(1); expire(2); canon(); \
        if \
        :: stop -> ss++; zt[0] = 0; zt[1] = 0; \
            if \
            :: ss >= LB -> assert(P_live && led); fin = 1 \
            :: else -> skip \
            fi \
        :: else -> skip \
        fi; \
        check() }

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

#define LOSS(m) \
    :: d_step { (!fin && !stop && fault && (fp[m] || kc[m] != 0 || qe[m] > 0 || RT(m) != 0)) -> FAULT; dataloss(m); canon() }

init {
#ifdef FRESH_MASTERS
    skip;
#else
    /* The masters have their counters (a store that is new costs one
     * quarantine, the same as a data loss, which is modelled). */
    d_step { fp[0] = 1; fp[1] = 1; fp[2] = 1 };
#endif
    do
    CANDIDATE(0)
    CANDIDATE(1)
    LOSS(0)
    LOSS(1)
    LOSS(2)
    :: atomic { (!fin && !stop && op[0] == O_NONE && op[1] == O_NONE && !hq[0] && !hq[1] && !bo[0] && !bo[1]) ->
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
