"""Hand-made model outputs with the verdict of a careful human reader, for the grader (tests/test_grader.py).

Written by hand for this suite: none is a real model output, and the multiple-choice questions are synthetic (no GPQA
item appears here or anywhere in the repository). Each case: (class, output, gold, human verdict). ``A`` is the
answer mark the prompt format uses. A human counts an output right when its final answer — the one it commits to
in its answer section — is the gold answer; an output that commits to two different answers, or to none, is wrong.
"""

A = "<|im_start|>think\nLet me work through it.\n<|im_start|>answer\n"

MATH = [
    # boxed answers
    ("boxed", A + "Answer: \\boxed{42}", "42", True),
    ("boxed", A + "\\boxed{\\frac{1}{2}}", "0.5", True),
    ("boxed", A + "The answer is $\\boxed{7}$.", "7", True),
    ("boxed", A + "\\boxed{3}", "4", False),
    ("boxed", A + "So $\\boxed{\\sqrt{\\frac{2}{3}}}$", "\\frac{\\sqrt{6}}{3}", True),
    ("boxed", A + "\\fbox{12}", "12", True),
    ("boxed", A + "\\boxed{\\text{Evelyn}}", "\\text{Evelyn}", True),
    ("boxed", A + "First guess \\boxed{2}, but correcting the sign, \\boxed{3}", "3", True),
    ("boxed", A + "\\boxed{ 204 }", "204", True),
    ("boxed", A + "### Final Answer\n\\[ \\boxed{8} \\]", "8", True),
    ("boxed", A + "The final answer is $\\boxed{13}$. I hope it is correct.", "13", True),
    ("boxed", A + "\\boxed{-\\frac{1}{2}}", "-0.5", True),
    # \boxed without braces
    ("boxed without braces", A + "\\boxed 5", "5", True),
    ("boxed without braces", A + "Therefore $\\boxed 12$.", "12", True),
    ("boxed without braces", A + "\\boxed 7", "8", False),
    ("boxed without braces", A + "The result is \\boxed 9.", "9", True),
    # answer statements in any case and markdown
    ("answer statement case", A + "answer: 17", "17", True),
    ("answer statement case", A + "ANSWER: 17", "17", True),
    ("answer statement case", A + "final answer: 9", "9", True),
    ("answer statement case", A + "**Answer:** 33", "33", True),
    ("answer statement case", A + "**Final Answer:** $8$", "8", True),
    ("answer statement case", A + "Answer : 6", "6", True),
    ("answer statement case", A + "answer: 18", "17", False),
    ("answer statement case", A + "Thus, the answer is 81.", "81", True),
    ("answer statement case", A + "The final answer is 81, since the pattern repeats.", "81", True),
    # the answer on a later line of a multi-line answer section
    ("later line", A + "Answer:\n\n$$\\frac{3}{4}$$", "\\frac{3}{4}", True),
    ("later line", A + "**Final Answer**\n\n42", "42", True),
    ("later line", A + "Answer: Let me state it clearly.\nThe value is 64.", "64", True),
    ("later line", A + "Answer:\n\\[\n\\boxed{10}\n\\]", "10", True),
    ("later line", A + "Final Answer\n\n\\(\\frac{7}{2}\\)", "3.5", True),
    ("later line", A + "Answer:\n\n65", "64", False),
    # numbers inside an answer sentence
    ("number in a sentence", A + "Answer: The total is 120 apples.", "120", True),
    ("number in a sentence", A + "Answer: There are $35$ ways.", "35", True),
    ("number in a sentence", A + "Answer: The area equals $\\frac{25}{2}$ square units.", "12.5", True),
    ("number in a sentence", A + "Answer: Adding them gives 7.", "7", True),
    ("number in a sentence", A + "Answer: So we get 15 as the result.", "16", False),
    ("number in a sentence", A + "Answer: The smallest such integer is 1,000.", "1000", True),
    ("number in a sentence", A + "Answer: The length of the segment is $2\\sqrt{3}$.", "2\\sqrt3", True),
    # number words, boxed or stated
    ("number words", A + "\\boxed{five}", "5", True),
    ("number words", A + "\\boxed{\\text{twelve}}", "12", True),
    ("number words", A + "Answer: twenty-one", "21", True),
    ("number words", A + "\\boxed{Seven}", "8", False),
    ("number words", A + "Answer: There are eleven of them.", "11", True),
    # one value boxed, another stated: a self-contradicting output is wrong
    ("contradictory", A + "\\boxed{5}\nAnswer: 6", "5", False),
    ("contradictory", A + "Answer: 6\nso \\boxed{5}", "6", False),
    ("contradictory", A + "\\boxed{\\frac{1}{2}}\nAnswer: 0.5", "\\frac{1}{2}", True),  # the same value twice
    ("contradictory", A + "Answer: \\boxed{9}", "9", True),
    ("contradictory", A + "The answer is $\\boxed{12}$.\nAnswer: 13", "12", False),
    # the answer section decides, not the thinking
    ("answer section", "<|im_start|>think\nthe answer is \\boxed{7}\n<|im_start|>answer\nAnswer: 204.", "204", True),
    ("answer section", "<|im_start|>think\nmaybe \\boxed{204}\n<|im_start|>answer\nAnswer: 7", "204", False),
    ("answer section", "Some reasoning without the mark. Therefore \\boxed{11}.", "11", True),
    ("answer section", "I could not solve it.", "3", False),
    ("answer section", A + "42", "42", True),
    ("answer section", A + "$\\frac{1}{3}$", "\\frac13", True),
    ("answer section", A + "I am not sure.", "3", False),
    ("answer section", "<|im_start|>think\nThe answer is 5, I think.", "5", True),
    # equivalent forms
    ("equivalence", A + "Answer: 0.5", "\\frac{1}{2}", True),
    ("equivalence", A + "Answer: \\dfrac{1}{2}", "1/2", True),
    ("equivalence", A + "Answer: (x+1)^2", "x^2+2x+1", True),
    ("equivalence", A + "Answer: \\frac{1}{3}", "0.3", False),
    ("equivalence", A + "Answer: 10^\\circ", "10", True),
    ("equivalence", A + "Answer: x = 5", "5", True),
    ("equivalence", A + "Answer: -3", "-3", True),
    ("equivalence", A + "Answer: 3", "-3", False),
    ("equivalence", A + "Answer: \\sqrt{2}/2", "\\frac{\\sqrt2}{2}", True),
    ("equivalence", A + "Answer: 2\\pi", "2\\pi", True),
    ("equivalence", A + "Answer: 033", "33", True),  # AIME answers are written with three digits
    ("equivalence", A + "Answer: 7.0", "7", True),
    ("equivalence", A + "Answer: 7.5", "7", False),
    ("equivalence", A + "Answer: 204 degrees", "204", True),
    # the suite's own training format: "Answer: " and a write-up that ends in a box (the box is the answer)
    ("write-up then box", A + "Answer: There are 3 cases to consider.\nCase 1 gives 4, case 2 gives 5 and case 3 "
                              "gives 3.\nSo the total is \\boxed{12}.", "12", True),
    ("write-up then box", A + "Answer: Let $x = 2$.\nThen $y = 5$, and so\n$$\\boxed{7}$$", "7", True),
    ("write-up then box", A + "Answer: Let $x = 2$.\nThen $y = 5$, and so\n$$\\boxed{7}$$", "5", False),
    ("write-up then box", A + "Answer: We use $A = \\frac{1}{2}bh$ with $b = 6$.\nThe area is \\boxed{15}.", "15",
     True),
    ("write-up then box", A + "Answer: First, 2 + 2 = 4.\nTherefore the final answer is \\boxed{9}.", "9", True),
    ("write-up then box", A + "Answer: Summing the 4 terms:\n\\[\n1 + 2 + 3 + 4 = 10\n\\]\n\\boxed{10}", "10",
     True),
    ("write-up then box", A + "Answer:\nWe have $n = 6$ sides.\nHence \\boxed{720}.", "720", True),
    # a hedge between different answers is never credited (the same value twice is no hedge)
    ("hedge", A + "Answer: 42 or 43", "42", False),
    ("hedge", A + "Answer: either 4 or 6", "4", False),
    ("hedge", A + "The answer is 4 or 6.", "6", False),
    ("hedge", A + "\\boxed{4} or \\boxed{6}", "6", False),
    ("hedge", A + "Answer: 7 or 8, depending on the convention.", "7", False),
    ("hedge", A + "Answer: 12 or 12.0", "12", True),
    # a negated value is not the answer
    ("negated value", A + "Answer: 9, not 8", "9", True),
    ("negated value", A + "Answer: 9, not 8", "8", False),
    ("negated value", A + "The answer is 15 rather than 16.", "15", True),
    ("negated value", A + "The answer is 15 rather than 16.", "16", False),
    ("negated value", A + "Answer: not 3 but 5", "5", True),
    ("negated value", A + "Answer: 10 (not 100)", "10", True),
    # formulas with a plus-minus or a union of inequalities
    ("formula", A + "Answer: $x = \\frac{-1\\pm\\sqrt5}{2}$", "\\frac{-1\\pm\\sqrt{5}}{2}", True),
    ("formula", A + "\\boxed{\\frac{-1 \\pm \\sqrt{5}}{2}}", "\\frac{-1\\pm\\sqrt{5}}{2}", True),
    ("formula", A + "Answer: $x<-1 \\text{ or } x>3$", "(-\\infty,-1)\\cup(3,\\infty)", True),
    ("formula", A + "\\boxed{x<-1 \\text{ or } x>3}", "(-\\infty,-1)\\cup(3,\\infty)", True),
    ("formula", A + "Answer: $x<-1 \\text{ or } x>4$", "(-\\infty,-1)\\cup(3,\\infty)", False),
    # several values boxed apart for a gold of several values
    ("several boxes", A + "The roots are \\boxed{2} and \\boxed{3}.", "2, 3", True),
    ("several boxes", A + "So $x = \\boxed{-1}$ or $x = \\boxed{4}$.", "-1, 4", True),
    ("several boxes", A + "The roots are \\boxed{2} and \\boxed{5}.", "2, 3", False),
]

# Synthetic four-option questions: (options, correct letter)
SPEED = ("4 m/s", "8 m/s", "12 m/s", "16 m/s")  # C
NUMBERS = ("4", "14", "40", "44")  # B
ENZYME = ("It lowers the activation energy", "It raises the temperature", "It is consumed by the reaction",
          "It shifts the equilibrium")  # A

CHOICE = [
    # letters in the common phrasings
    ("letter phrasing", A + "Answer: C", SPEED, "C", True),
    ("letter phrasing", A + "ANSWER: C", SPEED, "C", True),
    ("letter phrasing", A + "Final answer: C", SPEED, "C", True),
    ("letter phrasing", A + "Therefore the answer is C.", SPEED, "C", True),
    ("letter phrasing", A + "The correct answer is (C).", SPEED, "C", True),
    ("letter phrasing", A + "The correct option is C: 12 m/s.", SPEED, "C", True),
    ("letter phrasing", A + "Answer: (C) 12 m/s", SPEED, "C", True),
    ("letter phrasing", A + "Answer: **C**", SPEED, "C", True),
    ("letter phrasing", A + "answer: c", SPEED, "C", True),
    ("letter phrasing", A + "Answer: $\\text{C}$", SPEED, "C", True),
    ("letter phrasing", A + "The answer is option C.", SPEED, "C", True),
    ("letter phrasing", A + "I believe the answer is C because A and B violate conservation.", SPEED, "C", True),
    ("letter phrasing", A + "A careful analysis shows the answer is D.", SPEED, "D", True),
    ("letter phrasing", A + "**Answer: D**", SPEED, "D", True),
    ("letter phrasing", A + "Answer: (D)", SPEED, "D", True),
    ("letter phrasing", A + "The answer is a bit subtle. Answer: B", SPEED, "B", True),
    ("letter phrasing", A + "Answer: B", SPEED, "C", False),
    ("letter phrasing", A + "the answer is B", SPEED, "C", False),
    ("letter phrasing", A + "Answer: A", ENZYME, "A", True),
    ("letter phrasing", A + "\\boxed{C}", SPEED, "C", True),
    ("letter phrasing", A + "\\boxed{\\text{C}}", SPEED, "C", True),
    ("letter phrasing", A + "So the final answer is $\\boxed{B}$.", SPEED, "C", False),
    # a bare letter as the whole answer
    ("bare letter", A + "(C)", SPEED, "C", True),
    ("bare letter", A + "**C**", SPEED, "C", True),
    ("bare letter", A + "C) 12 m/s", SPEED, "C", True),
    ("bare letter", A + "Option C", SPEED, "C", True),
    ("bare letter", A + "C.", SPEED, "C", True),
    ("bare letter", A + "C", SPEED, "C", True),
    ("bare letter", A + "B", SPEED, "C", False),
    # the answer given as an option's text
    ("option text", A + "Answer: 12 m/s", SPEED, "C", True),
    ("option text", A + "Answer: The speed is 12 m/s.", SPEED, "C", True),
    ("option text", A + "Answer: 8 m/s", SPEED, "C", False),
    ("option text", A + "12 m/s", SPEED, "C", True),
    ("option text", A + "Answer: 14", NUMBERS, "B", True),
    ("option text", A + "Answer: 4", NUMBERS, "B", False),
    ("option text", A + "Answer: It lowers the activation energy.", ENZYME, "A", True),
    # negated letters are not answers
    ("negation", A + "Answer: not A", ENZYME, "A", False),
    ("negation", A + "It is not A. The answer is C.", SPEED, "C", True),
    ("negation", A + "A is incorrect, so the answer is C", SPEED, "C", True),
    ("negation", A + "Answer: not A", SPEED, "C", False),
    ("negation", A + "The answer is C, not A.", SPEED, "C", True),
    ("negation", A + "The answer cannot be B; \\boxed{D}", SPEED, "D", True),
    # self-contradicting outputs are wrong
    ("contradictory", A + "\\boxed{B}\nAnswer: C", SPEED, "C", False),
    ("contradictory", A + "Answer: C\n\\boxed{C}", SPEED, "C", True),
    ("contradictory", A + "Answer: A\nOn reflection, Answer: C", SPEED, "C", True),  # a stated correction
    ("contradictory", A + "The answer is \\boxed{D}.\nFinal answer: C", SPEED, "C", False),
    # no answer is never a default letter
    ("unreadable", A + "I cannot decide between the options.", SPEED, "A", False),
    ("unreadable", A + "A or B", SPEED, "A", False),
    ("unreadable", "", SPEED, "A", False),
    ("unreadable", A + "Answer: E", SPEED, "A", False),
    ("unreadable", "Let me think... A seems wrong... C is plausible", SPEED, "C", False),
    ("unreadable", A + "Answer: all of them", SPEED, "A", False),
    # the letter on a line after "Answer:"
    ("letter next line", A + "Answer:\nC", SPEED, "C", True),
    ("letter next line", A + "Answer:\n\n(C)", SPEED, "C", True),
    ("letter next line", A + "**Answer:**\n**C**", SPEED, "C", True),
    ("letter next line", A + "Final Answer:\n\nD", SPEED, "D", True),
    ("letter next line", A + "Answer:\nB", SPEED, "C", False),
    # an option's text in a box
    ("boxed option text", A + "\\boxed{12\\,\\mathrm{m/s}}", SPEED, "C", True),
    ("boxed option text", A + "\\boxed{12 \\text{ m/s}}", SPEED, "C", True),
    ("boxed option text", A + "\\boxed{8\\,\\mathrm{m/s}}", SPEED, "C", False),
    ("boxed option text", A + "\\boxed{14}", NUMBERS, "B", True),
    ("boxed option text", A + "\\boxed{\\text{It lowers the activation energy}}", ENZYME, "A", True),
    # a hedge between letters is never credited
    ("hedge", A + "\\boxed{B} or \\boxed{C}", SPEED, "C", False),
    ("hedge", A + "Answer: B or C", SPEED, "C", False),
    ("hedge", A + "The answer is either A or D.", SPEED, "D", False),
    ("hedge", A + "Answer: C (or possibly B)", SPEED, "C", False),
]
