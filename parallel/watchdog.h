// The hang watchdog of the Communicator. Every wait on an operation (each
// collective, send, recv and barrier goes through a handle's wait()) polls
// with a deadline of comm_timeout() seconds; a wait that runs past it means a
// peer died or stalled, so the waiting rank prints one line naming what it
// waits on and ends the whole job:
//
//   [rank 0] llm-train: error: hang: all_reduce on group 'dp' (ranks 0,2) of 4096 bytes has waited
//   30.0 s (--comm-timeout 30) at iteration 12; a peer may have died or stalled
//
// and MPI_Abort(MPI_COMM_WORLD, kCommHangExitCode) takes every rank down,
// including one stuck outside any MPI call. A timeout of 0 turns the watchdog
// off (waits are plain MPI_Wait).
//
// For its first second the wait polls (MPI_Test) in a loop, as MPI_Wait does
// (OpenMPI yields the core inside each poll when the node is oversubscribed):
// MPI only progresses inside such calls and a collective's rounds need every
// member to poll, so sleeping here would slow the whole group (measured: +10%
// per step with sleeps after 1-10 ms of waiting). Past 1 s, which is no
// longer normal traffic (a stalled or dead peer, a barrier while others write
// checkpoints), it sleeps between polls, 100 µs growing to 1 ms at 10 s, so a
// rank blocked on a peer leaves its core to others.
//
// The settings are process-wide (one training job per process) and may be
// changed at any time; the iteration is only used in the report.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace llm {

// The job's exit code when the watchdog ends it.
inline constexpr int kCommHangExitCode = 3;

// Seconds a wait may last before the job is ended; 0: wait forever (the
// default until set). Throws std::invalid_argument unless finite and >= 0.
void set_comm_timeout(double seconds);
double comm_timeout();

// The training iteration in progress, for the report (< 1: before training).
void set_comm_context_iteration(int64_t iteration);
int64_t comm_context_iteration();

// Testing: world rank `world_rank` stops for good (sleeps) when it starts its
// first communicator operation of training iteration `iteration`, as a hung
// rank would; its peers then wait on it. 0: never.
void set_comm_stall_injection(int64_t iteration, int world_rank = 1);
// Called by backends at the start of every operation; stalls as set above.
// `what` describes the operation ("all_reduce on group 'dp' ...").
void comm_stall_point(const std::function<std::string()>& what);

// Testing: called with the report instead of printing it and aborting the
// job. If it throws, the exception leaves wait() with the operation still in
// flight (wait again to finish it); if it returns, the wait goes on with a
// fresh deadline. An empty handler restores the default.
using CommHangHandler = std::function<void(const std::string& report)>;
void set_comm_hang_handler(CommHangHandler handler);

// Polls `test` (true once the operation has completed; it makes the
// backend's progress) until it returns true, as described above. When
// comm_timeout() > 0 and the wait lasts that long, reports
// "hang: <describe()> has waited ..." (see the top of this file).
void watchdog_wait(const std::function<bool()>& test, const std::function<std::string()>& describe);

// "0,2,4" (world ranks); long lists are cut: "0,1,2,3,4,5,6,7,... (64 ranks)".
std::string rank_list(const std::vector<int>& ranks);

}  // namespace llm
