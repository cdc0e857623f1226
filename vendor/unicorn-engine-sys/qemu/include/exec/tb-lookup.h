/*
 * Copyright (C) 2017, Emilio G. Cota <cota@braap.org>
 *
 * License: GNU GPL, version 2 or later.
 *   See the COPYING file in the top-level directory.
 */
#ifndef EXEC_TB_LOOKUP_H
#define EXEC_TB_LOOKUP_H

#ifdef NEED_CPU_H
#include "cpu.h"
#else
#include "exec/poison.h"
#endif

#include "exec/exec-all.h"
#include "exec/tb-hash.h"
#include "uc_priv.h"

/*
 * detvm: the jump cache (uc->detvm_jc), two-way set associative: a pc may be in either
 * entry of its set (index and index + 1, one cache line). A set's index is its page's
 * group (a hash of the page number, so pages spread over all groups) and a set in the
 * group from the pc's low bits, so that a one-page TLB flush need look at two groups
 * only. Two ways keep two hot targets of one page, or one pc under two sets of flags,
 * from evicting each other.
 */
#define DETVM_JC_SIZE (1u << DETVM_JC_BITS)
#define DETVM_JC_SLOTS (1u << DETVM_JC_SLOT_BITS)

static inline unsigned int detvm_jc_group(target_ulong page_addr)
{
    uint64_t n = (uint64_t)page_addr >> TARGET_PAGE_BITS;

    return (unsigned int)((n * 0x9e3779b97f4a7c15ull) >>
                          (64 - (DETVM_JC_BITS - DETVM_JC_SLOT_BITS)))
           << DETVM_JC_SLOT_BITS;
}

/* The first entry of the set for `pc`. */
static inline unsigned int detvm_jc_hash(target_ulong pc)
{
    return detvm_jc_group(pc & TARGET_PAGE_MASK) |
           ((pc ^ (pc >> DETVM_JC_SLOT_BITS)) & (DETVM_JC_SLOTS - 2));
}

static inline void detvm_jc_clear_entry(struct uc_struct *uc, unsigned int i)
{
    memset(&uc->detvm_jc[i], 0xff, sizeof(uc->detvm_jc[i]));
    uc->detvm_jc_tb[i] = NULL;
}

/*
 * detvm: true if entry `i` (already matched by pc, flags and cflags) may run now. An
 * entry of the current generation may: no TLB flush came since it was proven. An older
 * one may if `pc` still maps to its TB's physical page(s), the test tb_lookup_cmp makes
 * for a hash-table hit, with the same TLB fills in the same order.
 */
static inline bool detvm_jc_current(CPUArchState *env, struct uc_struct *uc,
                                    unsigned int i, target_ulong pc)
{
    TranslationBlock *tb;
    tb_page_addr_t phys;

    if (likely(uc->detvm_jc[i].gen == uc->detvm_jmp_gen)) {
        return true;
    }
    tb = uc->detvm_jc_tb[i];
    phys = get_page_addr_code(env, pc);
    if (phys == -1 || (phys & TARGET_PAGE_MASK) != tb->page_addr[0]) {
        return false;
    }
    if (tb->page_addr[1] != -1 &&
        tb->page_addr[1] !=
            get_page_addr_code(env, (pc & TARGET_PAGE_MASK) + TARGET_PAGE_SIZE)) {
        return false;
    }
    uc->detvm_jc[i].gen = uc->detvm_jmp_gen;
    return true;
}

static inline bool detvm_jc_matches(const struct detvm_jc_entry *e, target_ulong pc,
                                    target_ulong cs_base, uint32_t flags,
                                    uint32_t cf_mask)
{
    return e->pc == pc && e->flags == flags && e->cflags == cf_mask &&
           e->cs_base == cs_base;
}

/*
 * detvm: the index of the entry for (pc, cs_base, flags, cf_mask), or -1. Unicorn never
 * sets trace_dstate, so it is not compared (tb_htable_lookup still does).
 */
static inline int detvm_jc_find(CPUArchState *env, struct uc_struct *uc,
                                target_ulong pc, target_ulong cs_base,
                                uint32_t flags, uint32_t cf_mask)
{
    unsigned int i = detvm_jc_hash(pc);

    if (likely(detvm_jc_matches(&uc->detvm_jc[i], pc, cs_base, flags, cf_mask))) {
        return detvm_jc_current(env, uc, i, pc) ? (int)i : -1;
    }
    i++;
    if (detvm_jc_matches(&uc->detvm_jc[i], pc, cs_base, flags, cf_mask)) {
        return detvm_jc_current(env, uc, i, pc) ? (int)i : -1;
    }
    return -1;
}

/*
 * detvm: puts a TB found or made for the current page tables into its set's first
 * entry; what was there moves to the second (the older of the two leaves). A TB already
 * in the set (an entry that failed detvm_jc_current) is replaced where it is.
 */
static inline void detvm_jmp_cache_set(CPUState *cpu, uint32_t hash,
                                       TranslationBlock *tb)
{
    struct uc_struct *uc = cpu->uc;
    unsigned int i = hash & ~1u;
    struct detvm_jc_entry *e;

    if (tb == NULL) {
        return;
    }
    if (uc->detvm_jc_tb[i + 1] == tb) {
        i++;
    } else if (uc->detvm_jc_tb[i] != tb) {
        uc->detvm_jc[i + 1] = uc->detvm_jc[i];
        uc->detvm_jc_tb[i + 1] = uc->detvm_jc_tb[i];
    }
    e = &uc->detvm_jc[i];
    e->pc = tb->pc;
    e->tc_ptr = tb->tc.ptr;
    e->flags = tb->flags;
    e->cflags = tb_cflags(tb) & (CF_HASH_MASK | CF_INVALID);
    e->cs_base = (uint32_t)tb->cs_base;
    e->gen = uc->detvm_jmp_gen;
    uc->detvm_jc_tb[i] = tb;
}

/* detvm: drops `tb` from the jump cache (it was invalidated). */
static inline void detvm_jc_remove(struct uc_struct *uc, TranslationBlock *tb)
{
    unsigned int i = detvm_jc_hash(tb->pc);

    if (uc->detvm_jc_tb[i] == tb) {
        detvm_jc_clear_entry(uc, i);
    }
    if (uc->detvm_jc_tb[i + 1] == tb) {
        detvm_jc_clear_entry(uc, i + 1);
    }
}

/*
 * detvm: the jump cache entry for the CPU's next block, or -1: the lookup of
 * tb_lookup__cpu_state, which needs no load from the TB on a hit.
 */
static inline int detvm_jc_lookup(CPUState *cpu, target_ulong *pc,
                                  target_ulong *cs_base, uint32_t *flags,
                                  uint32_t *cf_mask)
{
    CPUArchState *env = (CPUArchState *)cpu->env_ptr;

    cpu_get_tb_cpu_state(env, pc, cs_base, flags);
    *cf_mask &= ~CF_CLUSTER_MASK;
    *cf_mask |= ((uint32_t)cpu->cluster_index) << CF_CLUSTER_SHIFT;
    return detvm_jc_find(env, cpu->uc, *pc, *cs_base, *flags, *cf_mask);
}

/* Might cause an exception, so have a longjmp destination ready */
static inline TranslationBlock *
tb_lookup__cpu_state(CPUState *cpu, target_ulong *pc, target_ulong *cs_base,
                     uint32_t *flags, uint32_t cf_mask)
{
    TranslationBlock *tb;
    int hit = detvm_jc_lookup(cpu, pc, cs_base, flags, &cf_mask);

    if (likely(hit >= 0)) {
        return cpu->uc->detvm_jc_tb[hit];
    }
    tb = tb_htable_lookup(cpu, *pc, *cs_base, *flags, cf_mask);
    if (tb == NULL) {
        return NULL;
    }
    detvm_jmp_cache_set(cpu, detvm_jc_hash(*pc), tb);
    return tb;
}

#endif /* EXEC_TB_LOOKUP_H */
