/*
 * afalg: the guest side of the virtio-crypto guest tests.
 *
 * Runs AES-CBC through the guest kernel's AF_ALG skcipher interface, bound
 * to an algorithm or driver name (virtio_crypto_aes_cbc selects the
 * virtio-crypto driver and nothing else), and prints one line per check
 * for the host to compare with its own reference:
 *
 *   afalg enc NAME LEN [OFF]      encrypt LEN bytes (byte i = i & 0xff) with
 *                                 key 00..1f and IV 00..0f, user buffers OFF
 *                                 bytes into a page, then decrypt it back:
 *     QG afalg enc name=N len=L off=O ct=<first 32 bytes> tail=<last 16> fnv=<FNV-1a-64> rt=ok|BAD
 *   afalg key NAME KEYLEN         setkey with a KEYLEN-byte key:
 *     QG afalg key name=N keylen=K result=0|<errno name>
 *   afalg fill NAME MAX           bind and key up to MAX transforms at once,
 *                                 stopping at the first setkey that fails:
 *     QG afalg fill name=N keyed=K result=0|<errno name>
 *   afalg loop NAME LEN           encrypt LEN bytes again and again until a
 *                                 line arrives on standard input:
 *     QG afalg loop name=N len=L n=<ops so far>      (about every 0.2 s)
 *     QG afalg loop name=N len=L done n=<ops>
 *   afalg bench NAME LEN SECONDS  encrypt LEN bytes for SECONDS:
 *     QG afalg bench name=N len=L ops=<ops> ns=<elapsed ns>
 *
 * A failing system call prints "QG afalg error ..." and exits 1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/if_alg.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef SOL_ALG
#define SOL_ALG 279
#endif

#define PAGE 4096

static const char *errname(int e)
{
	switch (e) {
	case EINVAL: return "EINVAL";
	case ENOENT: return "ENOENT";
	case ELIBBAD: return "ELIBBAD";
	case EIO: return "EIO";
	case ENOMEM: return "ENOMEM";
	case EBADMSG: return "EBADMSG";
	case ENODEV: return "ENODEV";
	case EMFILE: return "EMFILE";
	case ENOSPC: return "ENOSPC";
	default: return "E?";
	}
}

static void die(const char *what)
{
	int e = errno;
	printf("QG afalg error %s errno=%d %s\n", what, e, errname(e));
	fflush(stdout);
	exit(1);
}

static int bind_tfm(const char *name)
{
	struct sockaddr_alg sa;
	int fd = socket(AF_ALG, SOCK_SEQPACKET, 0);
	if (fd < 0)
		die("socket");
	memset(&sa, 0, sizeof(sa));
	sa.salg_family = AF_ALG;
	strcpy((char *)sa.salg_type, "skcipher");
	strncpy((char *)sa.salg_name, name, sizeof(sa.salg_name) - 1);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		die("bind");
	return fd;
}

static int set_key(int tfm, size_t keylen)
{
	unsigned char key[64];
	for (size_t i = 0; i < sizeof(key); i++)
		key[i] = (unsigned char)i;
	return setsockopt(tfm, SOL_ALG, ALG_SET_KEY, key, keylen);
}

/* One cipher operation on an accepted op socket: src (len) -> dst (len). */
static void cipher(int op, int encrypt, const unsigned char *src, unsigned char *dst, size_t len)
{
	char cbuf[CMSG_SPACE(sizeof(uint32_t)) + CMSG_SPACE(sizeof(struct af_alg_iv) + 16)];
	struct msghdr msg;
	struct iovec iov;
	struct cmsghdr *c;
	struct af_alg_iv *iv;

	memset(cbuf, 0, sizeof(cbuf));
	memset(&msg, 0, sizeof(msg));
	msg.msg_control = cbuf;
	msg.msg_controllen = sizeof(cbuf);
	c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_ALG;
	c->cmsg_type = ALG_SET_OP;
	c->cmsg_len = CMSG_LEN(sizeof(uint32_t));
	*(uint32_t *)CMSG_DATA(c) = encrypt ? ALG_OP_ENCRYPT : ALG_OP_DECRYPT;
	c = CMSG_NXTHDR(&msg, c);
	c->cmsg_level = SOL_ALG;
	c->cmsg_type = ALG_SET_IV;
	c->cmsg_len = CMSG_LEN(sizeof(struct af_alg_iv) + 16);
	iv = (struct af_alg_iv *)CMSG_DATA(c);
	iv->ivlen = 16;
	for (int i = 0; i < 16; i++)
		iv->iv[i] = (unsigned char)i;
	iov.iov_base = (void *)src;
	iov.iov_len = len;
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	if (sendmsg(op, &msg, 0) != (ssize_t)len)
		die("sendmsg");
	size_t got = 0;
	while (got < len) {
		ssize_t n = read(op, dst + got, len - got);
		if (n <= 0)
			die("read");
		got += (size_t)n;
	}
}

static int open_op(const char *name, int *tfm_out)
{
	int tfm = bind_tfm(name);
	if (set_key(tfm, 32) < 0)
		die("setkey");
	int op = accept(tfm, NULL, 0);
	if (op < 0)
		die("accept");
	*tfm_out = tfm;
	return op;
}

/* page-aligned buffer with room for len bytes starting off bytes in */
static unsigned char *buffer(size_t len, size_t off)
{
	size_t size = (off + len + PAGE - 1) / PAGE * PAGE + PAGE;
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		die("mmap");
	return (unsigned char *)p + off;
}

static void hex(const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		printf("%02x", p[i]);
}

static uint64_t fnv1a(const unsigned char *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	for (size_t i = 0; i < n; i++) {
		h ^= p[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

static int cmd_enc(const char *name, size_t len, size_t off)
{
	int tfm, op = open_op(name, &tfm);
	unsigned char *pt = buffer(len, off), *ct = buffer(len, off), *back = buffer(len, off);
	for (size_t i = 0; i < len; i++)
		pt[i] = (unsigned char)i;
	cipher(op, 1, pt, ct, len);
	cipher(op, 0, ct, back, len);
	printf("QG afalg enc name=%s len=%zu off=%zu ct=", name, len, off);
	hex(ct, len < 32 ? len : 32);
	printf(" tail=");
	hex(ct + (len < 16 ? 0 : len - 16), len < 16 ? len : 16);
	printf(" fnv=%016llx rt=%s\n", (unsigned long long)fnv1a(ct, len),
	       memcmp(pt, back, len) == 0 ? "ok" : "BAD");
	close(op);
	close(tfm);
	return 0;
}

static int cmd_key(const char *name, size_t keylen)
{
	int tfm = bind_tfm(name);
	int rc = set_key(tfm, keylen);
	printf("QG afalg key name=%s keylen=%zu result=%s\n", name, keylen,
	       rc == 0 ? "0" : errname(errno));
	close(tfm);
	return 0;
}

static int cmd_fill(const char *name, int max)
{
	int *fds = calloc((size_t)max, sizeof(int));
	int keyed = 0;
	const char *result = "0";
	if (fds == NULL)
		die("calloc");
	while (keyed < max) {
		int tfm = bind_tfm(name);
		if (set_key(tfm, 32) < 0) {
			result = errname(errno);
			close(tfm);
			break;
		}
		fds[keyed++] = tfm;
	}
	printf("QG afalg fill name=%s keyed=%d result=%s\n", name, keyed, result);
	for (int i = 0; i < keyed; i++)
		close(fds[i]);
	free(fds);
	return 0;
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static int cmd_loop(const char *name, size_t len)
{
	int tfm, op = open_op(name, &tfm);
	unsigned char *pt = buffer(len, 0), *ct = buffer(len, 0);
	struct pollfd pfd = {.fd = 0, .events = POLLIN};
	unsigned long n = 0;
	uint64_t last = now_ns();
	for (;;) {
		cipher(op, 1, pt, ct, len);
		n++;
		if (now_ns() - last > 200000000ULL) {
			last = now_ns();
			printf("QG afalg loop name=%s len=%zu n=%lu\n", name, len, n);
			fflush(stdout);
			if (poll(&pfd, 1, 0) > 0)
				break;
		}
	}
	printf("QG afalg loop name=%s len=%zu done n=%lu\n", name, len, n);
	return 0;
}

static int cmd_bench(const char *name, size_t len, double seconds)
{
	int tfm, op = open_op(name, &tfm);
	unsigned char *pt = buffer(len, 0), *ct = buffer(len, 0);
	uint64_t start = now_ns(), end = start + (uint64_t)(seconds * 1e9), t;
	unsigned long ops = 0;
	do {
		cipher(op, 1, pt, ct, len);
		ops++;
		t = now_ns();
	} while (t < end);
	printf("QG afalg bench name=%s len=%zu ops=%lu ns=%llu\n", name, len, ops,
	       (unsigned long long)(t - start));
	return 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc >= 4 && strcmp(argv[1], "enc") == 0)
		return cmd_enc(argv[2], strtoul(argv[3], NULL, 0),
			       argc > 4 ? strtoul(argv[4], NULL, 0) : 0);
	if (argc == 4 && strcmp(argv[1], "key") == 0)
		return cmd_key(argv[2], strtoul(argv[3], NULL, 0));
	if (argc == 4 && strcmp(argv[1], "fill") == 0)
		return cmd_fill(argv[2], atoi(argv[3]));
	if (argc == 4 && strcmp(argv[1], "loop") == 0)
		return cmd_loop(argv[2], strtoul(argv[3], NULL, 0));
	if (argc == 5 && strcmp(argv[1], "bench") == 0)
		return cmd_bench(argv[2], strtoul(argv[3], NULL, 0), atof(argv[4]));
	fprintf(stderr, "usage: afalg enc|key|fill|loop|bench NAME ...\n");
	return 2;
}
