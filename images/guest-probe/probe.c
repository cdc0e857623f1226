/*
 * detvm guest probe: prints every value a guest could use to tell two runs apart,
 * so a test can compare them across runs and seeds. Static, no CPUID checks on
 * purpose: it executes RDTSC, RDTSCP, RDRAND and RDSEED directly, as careless
 * programs do. Runs as /init (then powers the VM off) or as a normal program.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

static uint64_t rdtsc(void)
{
	uint32_t lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((uint64_t)hi << 32) | lo;
}

static uint64_t rdtscp(uint32_t *aux)
{
	uint32_t lo, hi;
	__asm__ volatile("rdtscp" : "=a"(lo), "=d"(hi), "=c"(*aux));
	return ((uint64_t)hi << 32) | lo;
}

static uint64_t rdrand(int *ok)
{
	uint64_t v;
	unsigned char cf;
	__asm__ volatile("rdrand %0; setc %1" : "=r"(v), "=qm"(cf));
	*ok = cf;
	return v;
}

static uint64_t rdseed(int *ok)
{
	uint64_t v;
	unsigned char cf;
	__asm__ volatile("rdseed %0; setc %1" : "=r"(v), "=qm"(cf));
	*ok = cf;
	return v;
}

static void print_hex(const char *label, const unsigned char *b, size_t n)
{
	printf("%s=", label);
	for (size_t i = 0; i < n; i++)
		printf("%02x", b[i]);
	printf("\n");
}

/* The race: threads append their id to a shared log without locks. */
#define THREADS 4
#define ROUNDS 2000
static volatile int race_log[THREADS * ROUNDS];
static volatile int race_len;

static void *racer(void *arg)
{
	int id = (int)(intptr_t)arg;
	for (int i = 0; i < ROUNDS; i++) {
		int at = race_len;
		for (volatile int spin = 0; spin < 20; spin++)
			;
		race_log[at] = id;
		race_len = at + 1;
	}
	return NULL;
}

static void race(void)
{
	pthread_t t[THREADS];
	uint64_t hash = 1469598103934665603ULL; /* FNV-1a over the log */

	race_len = 0;
	for (int i = 0; i < THREADS; i++)
		pthread_create(&t[i], NULL, racer, (void *)(intptr_t)i);
	for (int i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	for (int i = 0; i < race_len; i++) {
		hash ^= (uint64_t)race_log[i];
		hash *= 1099511628211ULL;
	}
	printf("race_len=%d race_hash=%016llx\n", race_len, (unsigned long long)hash);
}

/* The CPU features the guest sees, comma-separated, from /proc/cpuinfo. */
static void print_cpu_flags(void)
{
	char line[4096];
	FILE *f = fopen("/proc/cpuinfo", "r");

	if (!f) {
		printf("cpuflags=unavailable\n");
		return;
	}
	while (fgets(line, sizeof(line), f)) {
		char *colon = strchr(line, ':');
		if (strncmp(line, "flags", 5) != 0 || !colon)
			continue;
		printf("cpuflags=");
		for (char *p = colon + 2, *sep = ""; *p && *p != '\n'; sep = ",") {
			size_t n = strcspn(p, " \n");
			printf("%s%.*s", sep, (int)n, p);
			p += n;
			while (*p == ' ')
				p++;
		}
		printf("\n");
		break;
	}
	fclose(f);
}

int main(void)
{
	struct timespec rt, mono;
	unsigned char buf[16];
	uint32_t aux = 0;
	int ok;

	if (getpid() == 1) {
		mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
		mount("proc", "/proc", "proc", 0, NULL);
	}

	printf("PROBE-START\n");
	uint64_t t1 = rdtsc();
	uint64_t t2 = rdtscp(&aux);
	printf("rdtsc=%llu rdtscp=%llu tsc_aux=%u monotonic=%s\n", (unsigned long long)t1,
	       (unsigned long long)t2, aux, t2 >= t1 ? "yes" : "no");
	uint64_t r = rdrand(&ok);
	printf("rdrand=%016llx cf=%d\n", (unsigned long long)r, ok);
	r = rdseed(&ok);
	printf("rdseed=%016llx cf=%d\n", (unsigned long long)r, ok);

	clock_gettime(CLOCK_REALTIME, &rt);
	clock_gettime(CLOCK_MONOTONIC, &mono);
	printf("realtime=%lld.%09ld monotonic=%lld.%09ld\n", (long long)rt.tv_sec, rt.tv_nsec,
	       (long long)mono.tv_sec, mono.tv_nsec);

	int fd = open("/dev/urandom", O_RDONLY);
	if (fd >= 0 && read(fd, buf, sizeof(buf)) == sizeof(buf))
		print_hex("urandom", buf, sizeof(buf));
	else
		printf("urandom=unavailable\n");
	if (fd >= 0)
		close(fd);

	const unsigned char *at_random = (const unsigned char *)getauxval(AT_RANDOM);
	if (at_random)
		print_hex("at_random", at_random, 16);

	race();
	print_cpu_flags();
	printf("PROBE-END\n");
	fflush(stdout);

	if (getpid() == 1) {
		tcdrain(STDOUT_FILENO); /* the serial driver sends the tail by interrupts */
		sync();
		reboot(RB_POWER_OFF);
	}
	return 0;
}
