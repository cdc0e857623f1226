/*
 * detvm emu torture workloads: guest programs that make the CPU backend deliver many
 * exceptions and interrupts, so that instruction budgets land on and around them.
 * Each prints one line with a hash of what it computed, which must not depend on where
 * the backend's runs were cut (explorer/tests/torture_emu.rs).
 *
 *   torture pages ROUNDS      mmap, first-touch, fork + copy-on-write, munmap, brk
 *   torture threads N ROUNDS  N threads: a mutex, racy counters, private mappings
 *   torture faults ROUNDS     user-mode exceptions turned into signals (see `cases`)
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGE 4096

static uint64_t fnv(uint64_t h, uint64_t v)
{
	for (int i = 0; i < 8; i++) {
		h ^= (v >> (8 * i)) & 0xff;
		h *= 1099511628211ULL;
	}
	return h;
}

static uint64_t touch(volatile unsigned char *p, size_t pages, unsigned seed)
{
	uint64_t sum = 0;
	for (size_t i = 0; i < pages; i++) {
		p[i * PAGE + (seed + i * 7) % PAGE] = (unsigned char)(seed + i);
		sum += p[i * PAGE + (seed * 3 + i) % PAGE];
	}
	return sum;
}

/* Page-fault heavy: every page is touched first time, half of them again after a fork
 * (copy-on-write in the child), and the heap grows and shrinks. */
static int pages(int rounds)
{
	uint64_t h = 1469598103934665603ULL;
	for (int r = 0; r < rounds; r++) {
		size_t n = 8 + r % 24;
		unsigned char *p = mmap(NULL, n * PAGE, PROT_READ | PROT_WRITE,
					MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			return 1;
		h = fnv(h, touch(p, n, r));
		if (r % 4 == 0) {
			pid_t child = fork();
			if (child == 0)
				_exit((int)(touch(p, n / 2, r + 1) & 0x7f));
			int status = 0;
			waitpid(child, &status, 0);
			h = fnv(h, (uint64_t)WEXITSTATUS(status));
		}
		if (r % 3 == 0) {
			unsigned char *brk0 = sbrk(0);
			if (sbrk(4 * PAGE) != (void *)-1) {
				h = fnv(h, touch(brk0, 4, r));
				sbrk(-4 * PAGE);
			}
		}
		munmap(p, n * PAGE);
	}
	printf("pages rounds=%d hash=%016llx\n", rounds, (unsigned long long)h);
	return 0;
}

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t locked_count, lock_order;
static volatile uint64_t racy_count;
static int thread_rounds;

static void *worker(void *arg)
{
	int id = (int)(intptr_t)arg;
	for (int i = 0; i < thread_rounds; i++) {
		pthread_mutex_lock(&lock);
		locked_count++;
		lock_order = fnv(lock_order, (uint64_t)id);
		pthread_mutex_unlock(&lock);
		racy_count = racy_count + 1;
		if (i % 16 == 0) {
			/* munmap on another CPU's mm: TLB shootdown IPIs with 2 vCPUs */
			unsigned char *p = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE,
						MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			if (p != MAP_FAILED) {
				touch(p, 4, (unsigned)(id + i));
				munmap(p, 4 * PAGE);
			}
		}
		if (i % 64 == 0)
			sched_yield();
	}
	return NULL;
}

static int threads(int n, int rounds)
{
	pthread_t t[16];
	if (n < 1 || n > 16)
		return 1;
	thread_rounds = rounds;
	lock_order = 1469598103934665603ULL;
	for (int i = 0; i < n; i++)
		pthread_create(&t[i], NULL, worker, (void *)(intptr_t)i);
	for (int i = 0; i < n; i++)
		pthread_join(t[i], NULL);
	printf("threads n=%d locked=%llu racy=%llu order=%016llx\n", n,
	       (unsigned long long)locked_count, (unsigned long long)racy_count,
	       (unsigned long long)lock_order);
	return 0;
}

/* --- user-mode exceptions ------------------------------------------------------------ */

static sigjmp_buf recover;
static volatile int last_signal;

static void on_signal(int sig, siginfo_t *info, void *ctx)
{
	(void)info;
	(void)ctx;
	last_signal = sig;
	siglongjmp(recover, 1);
}

static unsigned char *rwx_page, *guard_page;

/* Each case executes one instruction (or short sequence) that raises an exception. */
static void case_int3(void) { __asm__ volatile("int3"); }
static void case_ud2(void) { __asm__ volatile("ud2"); }
static void case_hlt(void) { __asm__ volatile("hlt"); }     /* #GP in ring 3 */
static void case_cli(void) { __asm__ volatile("cli"); }     /* #GP: IOPL 0 */
static void case_int81(void) { __asm__ volatile("int $0x81"); } /* #GP: no such gate */
static void case_icebp(void) { __asm__ volatile(".byte 0xf1"); }
static void case_into(void) { __asm__ volatile(".byte 0xce"); } /* #UD in 64-bit mode */
static volatile uintptr_t low_address = 16;
static void case_null(void) { (void)*(volatile int *)low_address; } /* #PF: not present */
static void case_noncanonical(void)
{
	(void)*(volatile int *)0x8000000000000000ULL; /* #GP */
}
static void case_divide(void)
{
	volatile int zero = 0;
	volatile int x = 7 / zero; /* #DE */
	(void)x;
}
static void case_readonly(void)
{
	static const int constant = 1;
	*(volatile int *)&constant = 2; /* #PF: protection */
}
static void case_misaligned_sse(void)
{
	static char buf[64] __attribute__((aligned(16)));
	__asm__ volatile("movaps 1(%0), %%xmm0" ::"r"(buf) : "xmm0"); /* #GP */
}
static void case_single_step(void)
{
	/* TF set by POPF: #DB after the next instruction. */
	__asm__ volatile("pushfq; orq $0x100, (%%rsp); popfq; nop; nop" ::: "memory", "cc");
}
static void case_fetch_guard(void)
{
	((void (*)(void))guard_page)(); /* #PF on instruction fetch */
}
static void case_cross_page(void)
{
	/* mov eax, imm32 whose last bytes lie on the PROT_NONE page after the RWX page. */
	unsigned char *insn = rwx_page + PAGE - 2;
	((void (*)(void))insn)();
}
static void case_rdtsc(void)
{
	unsigned lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi)); /* CR4.TSD trap, kernel emulates */
}
static void case_rdrand(void)
{
	unsigned long v;
	__asm__ volatile("rdrand %0" : "=r"(v) :: "cc"); /* #UD, kernel emulates */
}
static void case_self_modify(void)
{
	/* Rewrite a function's immediate, then run it: the new code must run. */
	static unsigned counter;
	counter++;
	rwx_page[0] = 0xb8; /* mov eax, imm32 */
	memcpy(rwx_page + 1, &counter, 4);
	rwx_page[5] = 0xc3; /* ret */
	unsigned got = ((unsigned (*)(void))rwx_page)();
	if (got != counter)
		abort();
}

static void (*const cases[])(void) = {
	case_int3,	  case_ud2,	    case_hlt,	      case_cli,		case_int81,
	case_icebp,	  case_into,	    case_null,	      case_noncanonical, case_divide,
	case_readonly,	  case_misaligned_sse, case_single_step, case_fetch_guard, case_cross_page,
	case_rdtsc,	  case_rdrand,	    case_self_modify,
};

static const char *const case_names[] = {
	"int3", "ud2", "hlt", "cli", "int81", "icebp", "into", "null", "noncanonical", "divide",
	"readonly", "misaligned_sse", "single_step", "fetch_guard", "cross_page", "rdtsc",
	"rdrand", "self_modify",
};

_Static_assert(sizeof(case_names) == sizeof(cases) / sizeof(cases[0]) * sizeof(char *),
	       "one name per case");

static int faults(int rounds)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_signal;
	sa.sa_flags = SA_SIGINFO | SA_NODEFER;
	int sigs[] = {SIGSEGV, SIGILL, SIGTRAP, SIGFPE, SIGBUS};
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		sigaction(sigs[i], &sa, NULL);
	rwx_page = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE | PROT_EXEC,
			MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (rwx_page == MAP_FAILED)
		return 1;
	guard_page = rwx_page + PAGE;
	mprotect(guard_page, PAGE, PROT_NONE);
	rwx_page[PAGE - 2] = 0xb8; /* mov eax, imm32: 3 of its bytes on the guard page */
	rwx_page[PAGE - 1] = 0x01;

	size_t n = sizeof(cases) / sizeof(cases[0]);
	/* volatile: live across sigsetjmp */
	volatile uint64_t h = 1469598103934665603ULL;
	static int seen[32], first[32];
	for (volatile int r = 0; r < rounds; r++) {
		for (volatile size_t c = 0; c < n; c++) {
			last_signal = 0;
			if (sigsetjmp(recover, 1) == 0)
				cases[c]();
			h = fnv(h, (uint64_t)(c << 8 | (unsigned)last_signal));
			seen[last_signal & 31]++;
			if (r == 0)
				first[c] = last_signal;
		}
	}
	printf("faults rounds=%d segv=%d ill=%d trap=%d fpe=%d bus=%d none=%d hash=%016llx\n",
	       rounds, seen[SIGSEGV], seen[SIGILL], seen[SIGTRAP], seen[SIGFPE], seen[SIGBUS],
	       seen[0], (unsigned long long)h);
	printf("faults signals");
	for (size_t c = 0; c < n; c++)
		printf(" %s=%d", case_names[c], first[c]);
	printf("\n");
	return 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc >= 3 && strcmp(argv[1], "pages") == 0)
		return pages(atoi(argv[2]));
	if (argc >= 4 && strcmp(argv[1], "threads") == 0)
		return threads(atoi(argv[2]), atoi(argv[3]));
	if (argc >= 3 && strcmp(argv[1], "faults") == 0)
		return faults(atoi(argv[2]));
	fprintf(stderr, "usage: torture pages R | threads N R | faults R\n");
	return 2;
}
