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
 * detvm: true if the jump cache's `tb` at `hash` (already matched by pc, flags and
 * cflags) may run now. An entry of the current generation may: no TLB flush came since
 * it was proven. An older one may if `pc` still maps to the TB's physical page(s), the
 * test tb_lookup_cmp makes for a hash-table hit, with the same TLB fills in the same order.
 */
static inline bool detvm_jmp_cache_valid(CPUState *cpu, CPUArchState *env,
                                         uint32_t hash, TranslationBlock *tb,
                                         target_ulong pc)
{
    struct uc_struct *uc = cpu->uc;
    tb_page_addr_t phys;

    if (likely(uc->detvm_jmp_gen_of[hash] == uc->detvm_jmp_gen)) {
        return true;
    }
    phys = get_page_addr_code(env, pc);
    if (phys == -1 || (phys & TARGET_PAGE_MASK) != tb->page_addr[0]) {
        return false;
    }
    if (tb->page_addr[1] != -1 &&
        tb->page_addr[1] !=
            get_page_addr_code(env, (pc & TARGET_PAGE_MASK) + TARGET_PAGE_SIZE)) {
        return false;
    }
    uc->detvm_jmp_gen_of[hash] = uc->detvm_jmp_gen;
    return true;
}

/* detvm: fills a jump cache entry with a TB found or made for the current page tables. */
static inline void detvm_jmp_cache_set(CPUState *cpu, uint32_t hash,
                                       TranslationBlock *tb)
{
    cpu->tb_jmp_cache[hash] = tb;
    cpu->uc->detvm_jmp_gen_of[hash] = cpu->uc->detvm_jmp_gen;
    if (tb) {
        cpu->uc->detvm_jmp_page[hash] = tb->pc & TARGET_PAGE_MASK;
    }
}

/* Might cause an exception, so have a longjmp destination ready */
static inline TranslationBlock *
tb_lookup__cpu_state(CPUState *cpu, target_ulong *pc, target_ulong *cs_base,
                     uint32_t *flags, uint32_t cf_mask)
{
    CPUArchState *env = (CPUArchState *)cpu->env_ptr;
    TranslationBlock *tb;
    uint32_t hash;

    cpu_get_tb_cpu_state(env, pc, cs_base, flags);
    hash = tb_jmp_cache_hash_func(env->uc, *pc);
    tb = cpu->tb_jmp_cache[hash];

    cf_mask &= ~CF_CLUSTER_MASK;
    cf_mask |= ((uint32_t)cpu->cluster_index) << CF_CLUSTER_SHIFT;

    if (likely(tb &&
               tb->pc == *pc &&
               tb->cs_base == *cs_base &&
               tb->flags == *flags &&
               tb->trace_vcpu_dstate == *cpu->trace_dstate &&
               (tb_cflags(tb) & (CF_HASH_MASK | CF_INVALID)) == cf_mask &&
               detvm_jmp_cache_valid(cpu, env, hash, tb, *pc))) {
        return tb;
    }
    tb = tb_htable_lookup(cpu, *pc, *cs_base, *flags, cf_mask);
    if (tb == NULL) {
        return NULL;
    }
    detvm_jmp_cache_set(cpu, hash, tb);
    return tb;
}

#endif /* EXEC_TB_LOOKUP_H */
