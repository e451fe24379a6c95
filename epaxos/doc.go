// Package epaxos is the Egalitarian Paxos engine: a deterministic state machine (no
// goroutines, clock, I/O or global randomness) implementing protocol.Engine,
// protocol.StatsReporter and protocol.Suspecter for any odd number N = 2F+1 >= 3 of
// replicas.
//
// Sources: Moraru, Andersen, Kaminsky, "There is more consensus in egalitarian
// parliaments" (SOSP'13) and tech report CMU-PDL-13-111 (normal path, optimized fast
// quorum, execution); Sutra, "On the correctness of Egalitarian Paxos" (IPL 2020,
// arXiv:1906.10917: keep the promised ballot and the ballot of the last vote apart);
// Ryabinin, Gotsman, Sutra, "Making Democracy Work: Fixing and Simplifying Egalitarian
// Paxos" (OPODIS'25, arXiv:2511.02743: EPaxos*, recovery by validating a possible
// fast-path value against invalidating commands and waiting for them). docs/epaxos.md
// has the long version.
//
// # Normal path
//
// Every replica owns a row of instances numbered from 1. All commands proposed since
// the last Ready go into one new instance (MaxBatch at most; more instances otherwise),
// as long as fewer than MaxInFlight instances led here are uncommitted. The command
// leader computes deps (per replica, the highest instance that conflicts on some key:
// same key and at least one write, protocol.Command.Conflicts; prefix semantics) and
// seq (1 + the highest seq of a conflict) from a per-key index, O(commands), persists
// the instance and sends PreAccept at ballot 0 (Ballot{0, leader}). An acceptor merges
// the conflicts it knows into the proposal and votes once per ballot (PreAcceptOK).
//
// Fast path: the leader commits the proposal when FastQuorum(N) = F + ⌊(F+1)/2⌋ votes,
// its own included, are identical to it (N=3: 2, N=5: 3, N=7: 5). The decision is a
// function of the SET of votes received: the leader waits while a fast quorum of
// identical votes can still form among the replicas asked, and goes to the slow path as
// soon as it cannot (or after ThriftyWidenTicks) provided a majority voted. Slow path:
// Accept the union of the deps and the maximum seq at a majority (F+1), then Commit to
// all. The tech report's extra fast-path condition for the optimized quorum (all deps
// committed) is not used: recovery validates a possible fast-path value against every
// conflicting instance instead (below), which covers the case it was made for.
//
// Thrifty mode sends PreAccept to the FastQuorum-1 closest peers (LatencyRank, else by
// ID distance) and Accept to the F closest, and widens to all after ThriftyWidenTicks.
// Unanswered PreAccept, EAccept, EPrepare and EValidate are retransmitted every
// RetransmitTicks. Commits are not acknowledged: a replica that misses one learns it by
// recovering the instance (its recovery timer, or Suspect from the executor), and any
// replica asked about an instance it has committed answers with ECommit. The commits
// decided here since the last Ready go to each peer as one ECommitBatch (one ECommit
// when there is a single one).
//
// # Ballots and records
//
// Each instance keeps Ballot (the highest ballot promised) and VBallot (the ballot of
// the last vote) separately; this is the fix of Sutra 2019 and TestSutraCounterexample
// replays its schedule. For ballot-0 pre-accept votes VBallot encodes whether the vote
// is for the leader's value: Ballot{0, leader} when the acceptor's attributes equal the
// proposal, zero when it added dependencies (that vote cannot be part of a fast quorum).
// Every change of an instance is a RecordInstance carrying the full state; the Ready
// that persists it also carries any vote (PreAcceptOK, EAcceptOK, EPrepareOK,
// EValidateOK) and the leader's own PreAccept/EAccept, so the runtime's
// persist-before-send order makes them durable first. A restarted replica rebuilds
// everything from these records, re-emits its committed instances, and recovers its
// own uncommitted instances at the first tick.
//
// # Recovery
//
// When an instance known here stays uncommitted for RecoveryTicks (plus a seeded
// jitter of up to RecoveryTicks/2), or on Suspect, the replica runs Explicit Prepare
// at a higher ballot and resolves the instance from F+1 EPrepareOK replies (its own
// state included), in the manner of EPaxos* (Ryabinin, Gotsman, Sutra 2025):
//
//  1. a committed value is adopted (a committed acceptor answers ECommit);
//  2. otherwise the accepted value with the highest VBallot is Accepted again;
//  3. otherwise, if the proposal may have committed on the fast path, it is validated:
//     that requires the leader not to be among the replies (a leader that answers
//     has not committed, and no longer can), no pre-accept from a recovery ballot, and
//     at least FastQuorum-1-(N-1-q) ballot-0 votes identical to the proposal among the q
//     non-leader replies (that many members of any fast quorum are among them). The
//     recoverer sends EValidate with the candidate (cmds, deps, seq); each of F+1
//     replicas records the instance if unknown (so every later conflicting command
//     there depends on it) and returns the conflicting instances it knows that the
//     candidate's deps do not cover (the "invalidating" ones). The recoverer waits until
//     each of them is committed (recovering those that stay uncommitted): if one
//     committed without depending on the instance, the proposal cannot have been
//     fast-committed (visibility would be broken) and step 4 runs; if all depend on it,
//     the candidate is Accepted. The wait ends early, with step 4, as soon as the
//     evidence proves the candidate was not fast-committed: the command leader answers
//     EPrepare late (replies after the first F+1 are still read), or fewer than
//     FastQuorum-1 non-leader replicas voted for it or may still have. A replica counts
//     as unable to have voted for it once its EPrepareOK says so, or when an
//     invalidator it leads is known here without covering the instance (its leader
//     did not know the candidate when proposing, and a later vote of its own would
//     cover its instance). Two recoveries waiting on each other (two crashed leaders
//     with conflicting instances that miss each other) are broken by this rule: their
//     identical voters are disjoint and 2*FastQuorum > N, so once the live replicas
//     answered one of the two candidates has too few possible votes
//     (TestRecoveryTwoCrashedLeadersWaitingOnEachOther). A validator that forgot
//     instances above the candidate's deps (Truncation) answers from its per-key
//     summary: invalidated if a conflicting one executed there, abstaining if it
//     cannot tell; abstentions do not count towards the F+1;
//  4. otherwise Phase 1 runs again at the recovery ballot with the commands (the deps
//     proposed are the union of those reported, acceptors add what they know), then
//     Accept of the majority's union: recovery never commits from incomplete local
//     pre-accept state, and never takes the fast path;
//  5. a no-op is Accepted when no reply carries the commands. A command leader whose
//     instance became a no-op proposes its commands again in a new instance.
//
// # Truncation (protocol.Compactor)
//
// The runtime calls Compact(F) with the frontier F it executed and snapshotted. The
// engine keeps instances until every replica reported executing them (the global
// frontier: every FrontierTicks each replica sends its compacted frontier to all peers
// as an ECommitBatch whose Deps is the frontier and whose Insts may be empty; commit
// batches carry it too), but never more than RetainInstances per row below F. It never
// forgets the per-key conflict index: an entry keeps pointing at a forgotten instance
// (memory grows with distinct keys, like the state machine, not with instances), and
// per key it also keeps the highest forgotten instance per row, for validation.
//
// LiveRecords is a RecordSnapshot (Inst.Deps = F) and the full state of every instance
// in memory. On restart from it, instances covered by F are executed (kept if present,
// never emitted), own instance numbers continue above F and above every record, and the
// forgotten prefix is "blind": its per-key summaries are lost. A request (PreAccept,
// EAccept, EPrepare, EValidate) about a forgotten instance is answered with a MsgSnapshot
// to the asker (Deps = F, Data empty for the runtime to fill; at most one per peer every
// RecoveryTicks). Step(MsgSnapshot) installs a frontier only if SnapshotAhead (at least
// as far in every row, further in one): covered instances count as committed and
// executed, are dropped from memory and from Committed not yet handed out, and become
// blind; what lies above is recovered as usual.
//
// The dependency invariant (of two conflicting committed instances one depends on the
// other) survives forgetting: a vote or proposal from a replica with a blind prefix
// depends on the whole blind prefix (it cannot tell which of those instances conflict),
// and a command leader's proposal depends on the global frontier, so that a blind
// replica's vote stays identical to it once the others have executed that far (the fast
// path is not lost after a restart). A validator judges forgotten instances above the
// candidate's deps from the per-key summary (one that executed there does not depend on
// the uncommitted candidate: invalidated) and abstains where it is blind.
//
// # Sequence numbers
//
// seq is kept, agreed with the deps (the executor orders a strongly connected component
// by (Seq, Replica, Num)). Keeping it preserves real-time order inside a component, which
// replying on commit (blind writes) needs: an acceptor's index keeps the highest seq of
// every key from its latest state (accepted and committed values included), so a
// command proposed after another committed gets a higher seq. The recovery corner case
// of the paper (a recovered fast-path value with a different seq) does not arise: the
// fast-path value is recovered with its seq as part of the validated attributes, and
// every other recovery recomputes seq from a majority.
//
// # Liveness under conflict
//
// Instances of one replica are bounded by MaxInFlight, so under 100% conflict the
// proposal rate turns into bigger batches rather than more concurrent instances, which
// keeps dependency cycles (strongly connected components the executor must wait for)
// short. Recoveries back off with seeded jitter, a refused coordinator yields to the
// higher ballot and draws a new delay, and Suspect defers to another replica's recovery
// under way.
//
// # Messages (field use per type)
//
//	PreAccept        Ballot, Inst, Cmds, Deps (proposed), Seq (proposed)
//	PreAcceptOK      Ballot, Inst, OK; OK: Deps, Seq of the vote; !OK: Ballot = promised
//	EAccept          Ballot, Inst, Cmds, Deps, Seq
//	EAcceptOK        Ballot, Inst, OK (!OK: Ballot = promised)
//	ECommit          Inst, Cmds, Deps, Seq (one commit to announce, or an answer)
//	ECommitBatch     Insts = the commits decided here since the last Ready (shared by
//	                 the messages to every peer); Deps = the sender's compacted
//	                 frontier (nil before the first Compact). Insts empty: a frontier
//	                 report, sent every FrontierTicks
//	Snapshot         Deps = the sender's compacted frontier, Data filled by the runtime
//	EPrepare         Ballot, Inst
//	EPrepareOK       Ballot, Inst, OK, Status, VBallot, Cmds, Deps, Seq (!OK: Ballot = promised)
//	EValidate        Ballot, Inst, Cmds, Deps, Seq: the candidate fast-path value
//	EValidateOK      Ballot, Inst, OK, Deps = the invalidating instances (a list, NOT
//	                 prefix semantics), Insts = those of them committed at the sender,
//	                 Index = verdict: 0 answer, 1 invalidated by a forgotten instance,
//	                 2 abstain (blind)
//	TryPreAccept(OK) unused (the original TryPreAccept recovery is not implemented)
//
// # Test-only mutations
//
// Config.UnsafeFastQuorumMinusOne and Config.UnsafeRecoveryIgnoreAccepted break safety on
// purpose so that the simulator can prove its checks fail. Never set them outside tests.
package epaxos
