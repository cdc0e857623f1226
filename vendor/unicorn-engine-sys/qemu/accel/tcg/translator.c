/*
 * Generic intermediate code generation.
 *
 * Copyright (C) 2016-2017 Lluís Vilanova <vilanova@ac.upc.edu>
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 */

#include "qemu/osdep.h"
#include "cpu.h"
#include "tcg/tcg.h"
#include "tcg/tcg-op.h"
#include "exec/exec-all.h"
#include "exec/gen-icount.h"
#include "exec/translator.h"

#include <uc_priv.h>

/* Pairs with tcg_clear_temp_count.
   To be called by #TranslatorOps.{translate_insn,tb_stop} if
   (1) the target is sufficiently clean to support reporting,
   (2) as and when all temporaries are known to be consumed.
   For most targets, (2) is at the end of translate_insn.  */
void translator_loop_temp_check(DisasContextBase *db)
{
#if 0
    if (tcg_check_temp_count()) {
        qemu_log("warning: TCG temporary leaks before "
                 TARGET_FMT_lx "\n", db->pc_next);
    }
#endif
}

/*
 * detvm: exact instruction counting without calling the block hook for every TB.
 * With a counter registered (uc_detvm_set_counter), a TB starts with:
 *
 *     if (exit not requested &&
 *         c->committed + c->cur_icount + ICOUNT <= c->limit) {
 *         c->committed += c->cur_icount;   // the previous block retired in full
 *         c->cur_icount = ICOUNT; c->cur_tb = tb; c->cur_pc = pc;
 *         goto body;                       // no hook, no exit check needed
 *     }
 *     <block hook> <exit check>
 *   body:
 *
 * which is what detvm's block hook does in its common case; the hook handles every
 * other case (and sets limit to 0 whenever it must see every block). Count-limited
 * TBs never get the fast path. ICOUNT is patched in once the TB is translated, into
 * the two constant ops returned in icount_ops.
 */
static void gen_detvm_count_fast_path(TCGContext *tcg_ctx, struct uc_struct *uc,
                                      TranslationBlock *tb, target_ulong pc,
                                      TCGLabel **body_label, TCGOp **icount_ops)
{
    TCGLabel *slow = gen_new_label(tcg_ctx);
    TCGv_i32 exit_flag = tcg_temp_new_i32(tcg_ctx);
    TCGv_ptr c;
    TCGv_i64 committed, cur_icount, icount, end, limit, value;

    *body_label = gen_new_label(tcg_ctx);
    tcg_gen_ld_i32(tcg_ctx, exit_flag, tcg_ctx->cpu_env,
                   offsetof(ArchCPU, neg.icount_decr.u32) - offsetof(ArchCPU, env));
    tcg_gen_brcondi_i32(tcg_ctx, TCG_COND_LT, exit_flag, 0, slow);
    tcg_temp_free_i32(tcg_ctx, exit_flag);

    /* A new basic block: every temp below is created and used inside it. */
    c = tcg_const_ptr(tcg_ctx, uc->detvm_counter);
    committed = tcg_temp_new_i64(tcg_ctx);
    cur_icount = tcg_temp_new_i64(tcg_ctx);
    end = tcg_temp_new_i64(tcg_ctx);
    limit = tcg_temp_new_i64(tcg_ctx);
    tcg_gen_ld_i64(tcg_ctx, committed, c, offsetof(struct uc_detvm_counter, committed));
    tcg_gen_ld_i64(tcg_ctx, cur_icount, c, offsetof(struct uc_detvm_counter, cur_icount));
    tcg_gen_add_i64(tcg_ctx, committed, committed, cur_icount);
    icount = tcg_const_i64(tcg_ctx, 0xf7f7f7f7);
    icount_ops[0] = tcg_last_op(tcg_ctx);
    tcg_gen_add_i64(tcg_ctx, end, committed, icount);
    tcg_gen_ld_i64(tcg_ctx, limit, c, offsetof(struct uc_detvm_counter, limit));
    tcg_gen_brcond_i64(tcg_ctx, TCG_COND_GTU, end, limit, slow);

    /* Another basic block: reload what is still needed. */
    tcg_temp_free_i64(tcg_ctx, committed);
    tcg_temp_free_i64(tcg_ctx, cur_icount);
    tcg_temp_free_i64(tcg_ctx, end);
    tcg_temp_free_i64(tcg_ctx, limit);
    tcg_temp_free_i64(tcg_ctx, icount);
    tcg_temp_free_ptr(tcg_ctx, c);
    c = tcg_const_ptr(tcg_ctx, uc->detvm_counter);
    committed = tcg_temp_new_i64(tcg_ctx);
    cur_icount = tcg_temp_new_i64(tcg_ctx);
    tcg_gen_ld_i64(tcg_ctx, committed, c, offsetof(struct uc_detvm_counter, committed));
    tcg_gen_ld_i64(tcg_ctx, cur_icount, c, offsetof(struct uc_detvm_counter, cur_icount));
    tcg_gen_add_i64(tcg_ctx, committed, committed, cur_icount);
    tcg_gen_st_i64(tcg_ctx, committed, c, offsetof(struct uc_detvm_counter, committed));
    tcg_temp_free_i64(tcg_ctx, committed);
    tcg_temp_free_i64(tcg_ctx, cur_icount);
    value = tcg_const_i64(tcg_ctx, 0xf7f7f7f7);
    icount_ops[1] = tcg_last_op(tcg_ctx);
    tcg_gen_st_i64(tcg_ctx, value, c, offsetof(struct uc_detvm_counter, cur_icount));
    tcg_temp_free_i64(tcg_ctx, value);
    value = tcg_const_i64(tcg_ctx, (uint64_t)(uintptr_t)tb);
    tcg_gen_st_i64(tcg_ctx, value, c, offsetof(struct uc_detvm_counter, cur_tb));
    tcg_temp_free_i64(tcg_ctx, value);
    value = tcg_const_i64(tcg_ctx, (uint64_t)pc);
    tcg_gen_st_i64(tcg_ctx, value, c, offsetof(struct uc_detvm_counter, cur_pc));
    tcg_temp_free_i64(tcg_ctx, value);
    tcg_temp_free_ptr(tcg_ctx, c);
    tcg_gen_br(tcg_ctx, *body_label);

    gen_set_label(tcg_ctx, slow);
}

void translator_loop(const TranslatorOps *ops, DisasContextBase *db,
                     CPUState *cpu, TranslationBlock *tb, int max_insns)
{
    int bp_insn = 0;
    struct uc_struct *uc = (struct uc_struct *)cpu->uc;
    TCGContext *tcg_ctx = uc->tcg_ctx;
    TCGOp *prev_op = NULL;
    bool block_hook = false;
    TCGOp *icount_ops[2] = { NULL, NULL };
    TCGLabel *body_label = NULL;

    /* Initialize DisasContext */
    db->tb = tb;
    db->pc_first = tb->pc;
    db->pc_next = db->pc_first;
    db->is_jmp = DISAS_NEXT;
    db->num_insns = 0;
    db->max_insns = max_insns;
    db->singlestep_enabled = cpu->singlestep_enabled;

    ops->init_disas_context(db, cpu);
    tcg_debug_assert(db->is_jmp == DISAS_NEXT);  /* no early exit */

    /* Reset the temp count so that we can identify leaks */
    tcg_clear_temp_count();

    /* Unicorn: early check to see if the address of this block is
     * the "run until" address. */
    if (uc_addr_is_exit(uc, tb->pc)) {
        // This should catch that instruction is at the end
        // and generate appropriate halting code.
        gen_tb_start(tcg_ctx, db->tb);
        ops->tb_start(db, cpu);
        db->num_insns++;
        ops->insn_start(db, cpu);
        ops->translate_insn(db, cpu);
        goto _end_loop;
    }

    /* Unicorn: trace this block on request
     * Only hook this block if it is not broken from previous translation due to
     * full translation cache
     */
    if (HOOK_EXISTS_BOUNDED(uc, UC_HOOK_BLOCK, tb->pc)) {
        ops->pc_sync(db, cpu);
        {
            /* detvm: publish this TB to the block hook (uc_detvm_block_hook_tb_slot). */
            TCGv_ptr slot = tcg_const_ptr(tcg_ctx, &uc->block_hook_tb);
            TCGv_ptr this_tb = tcg_const_ptr(tcg_ctx, tb);
            tcg_gen_st_ptr(tcg_ctx, this_tb, slot, 0);
            tcg_temp_free_ptr(tcg_ctx, this_tb);
            tcg_temp_free_ptr(tcg_ctx, slot);
        }
        if (uc->detvm_counter != NULL && !(tb_cflags(tb) & CF_COUNT_MASK)) {
            gen_detvm_count_fast_path(tcg_ctx, uc, tb, db->pc_first, &body_label,
                                      icount_ops);
        }
        prev_op = tcg_last_op(tcg_ctx);
        block_hook = true;
        gen_uc_tracecode(tcg_ctx, 0xf8f8f8f8, UC_HOOK_BLOCK_IDX, uc, db->pc_first);
    }

    // tcg_dump_ops(tcg_ctx, false, "translator loop");

    /* Start translating.  */
    gen_tb_start(tcg_ctx, db->tb);
    if (body_label != NULL) {
        /* detvm: the fast path joins here, past the hook and the exit check. */
        gen_set_label(tcg_ctx, body_label);
    }
    // tcg_dump_ops(tcg_ctx, false, "tb start");

    ops->tb_start(db, cpu);
    // tcg_dump_ops(tcg_ctx, false, "tb start 2");

    tcg_debug_assert(db->is_jmp == DISAS_NEXT);  /* no early exit */

    while (true) {
        db->num_insns++;

        ops->insn_start(db, cpu);
        tcg_debug_assert(db->is_jmp == DISAS_NEXT);  /* no early exit */

        /* Pass breakpoint hits to target for further processing */
        if (!db->singlestep_enabled
            && unlikely(!QTAILQ_EMPTY(&cpu->breakpoints))) {
            CPUBreakpoint *bp;
            QTAILQ_FOREACH(bp, &cpu->breakpoints, entry) {
                if (bp->pc == db->pc_next) {
                    if (ops->breakpoint_check(db, cpu, bp)) {
                        bp_insn = 1;
                        break;
                    }
                }
            }
            /* The breakpoint_check hook may use DISAS_TOO_MANY to indicate
               that only one more instruction is to be executed.  Otherwise
               it should use DISAS_NORETURN when generating an exception,
               but may use a DISAS_TARGET_* value for Something Else.  */
            if (db->is_jmp > DISAS_TOO_MANY) {
                break;
            }
        }

        /* Disassemble one instruction.  The translate_insn hook should
           update db->pc_next and db->is_jmp to indicate what should be
           done next -- either exiting this loop or locate the start of
           the next instruction.  */
        ops->translate_insn(db, cpu);
        // tcg_dump_ops(tcg_ctx, false, "insn translate");

        /* Stop translation if translate_insn so indicated.  */
        if (db->is_jmp != DISAS_NEXT) {
            break;
        }

        /* Stop translation if the output buffer is full,
           or we have executed all of the allowed instructions.  */
        if (tcg_op_buf_full(tcg_ctx) || db->num_insns >= db->max_insns) {
            db->is_jmp = DISAS_TOO_MANY;
            break;
        }
    }

_end_loop:
    /* Emit code to exit the TB, as indicated by db->is_jmp.  */
    ops->tb_stop(db, cpu);
    gen_tb_end(tcg_ctx, db->tb, db->num_insns - bp_insn);
    // tcg_dump_ops(tcg_ctx, false, "tb end");

    /* The disas_log hook may use these values rather than recompute.  */
    db->tb->size = db->pc_next - db->pc_first;
    db->tb->icount = db->num_insns;

    hooked_regions_check(uc, db->tb->pc, db->tb->size);

    if (block_hook) {
        TCGOp *tcg_op;

        // Unicorn: patch the callback to have the proper block size.
        if (prev_op) {
            // As explained further up in the function where prev_op is
            // assigned, we move forward in the tail queue, so we're modifying the
            // move instruction generated by gen_uc_tracecode() that contains
            // the instruction size to assign the proper size (replacing 0xF1F1F1F1).
            tcg_op = QTAILQ_NEXT(prev_op, link);
        } else {
            // this basic block is the first emulated code ever,
            // so the basic block operand is the first operand
            tcg_op = QTAILQ_FIRST(&tcg_ctx->ops);
        }

        tcg_op->args[1] = db->tb->size;
    }
    if (icount_ops[0] != NULL) {
        /* detvm: the fast path's instruction count, known only now. */
        icount_ops[0]->args[1] = db->tb->icount;
        icount_ops[1]->args[1] = db->tb->icount;
    }
}
